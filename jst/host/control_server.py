"""Where the host listens for its daemon's control connection and for link-handlers.

Unix: sockets named ``control`` (the daemon) and ``link`` (link-handlers: the §4.3 HTTP
endpoint, also served on loopback TCP for the original's link-handlers) in a fresh
directory created 0700 by ``mkdtemp``
(under ``$XDG_RUNTIME_DIR`` when set, else the temp dir), so no other user can connect
or even see it. The directory is removed when the host exits normally; after a SIGKILL
it is an empty-ish leftover in a temp directory, cleaned by the next host (see
``remove_stale_dirs``).

Windows: Python's ``socket`` has no AF_UNIX there, and a named pipe server needs raw
overlapped-I/O calls that trio does not wrap. The host listens on a loopback TCP port
instead; anyone local could connect, so a connection only counts once its first message
carries the daemon token (``control.Ready.auth``), which only the child's environment
ever held. Link-handlers use the loopback TCP endpoint and its token there. Not
exercised by CI (Linux).
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not ``typing``: imported before the host starts its daemon
if TYPE_CHECKING:
    import _socket
    from pathlib import Path

    import trio

# Import-light (no trio, psutil or shutil at import): ``bind_control_socket`` runs
# before the host imports trio, see launch.py.

DIR_PREFIX = "jst-host-"
# sun_path is 108 bytes on Linux, 104 on macOS; stay under both.
MAX_UNIX_PATH = 100


def _rmtree(path: str | Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


class ControlListener:
    def __init__(self, listener: trio.SocketListener, address: str, directory: Path | None):
        self.listener = listener
        self.address = address
        self.directory = directory

    async def aclose(self) -> None:
        await self.listener.aclose()
        if self.directory is not None:
            _rmtree(self.directory)


async def _unix_listener(path: str | Path) -> trio.SocketListener:
    import socket

    import trio

    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(str(path))
        sock.listen(16)
    except OSError:
        sock.close()
        raise
    return trio.SocketListener(sock)


async def open_link_listener(control: ControlListener) -> tuple[trio.SocketListener, str] | None:
    """The link-handler socket next to the control socket; ``None`` where there is none."""
    if control.directory is None:
        return None
    path = control.directory / "link"
    return await _unix_listener(path), f"unix:{path}"


def base_dir() -> str:
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isdir(runtime):
        return runtime
    return temp_dir()


def temp_dir() -> str:
    """``tempfile.gettempdir()``'s usual answer without importing tempfile and without its
    probe (a file written and removed in each candidate): ~10 ms before the daemon starts
    (issue 17). The first of ``$TMPDIR``, ``$TEMP``, ``$TMP``, ``/tmp``, ``/var/tmp``,
    ``/usr/tmp`` that is a directory we may write to; else tempfile decides. A wrong
    guess costs nothing but time: the host binds its control socket again once it runs."""
    candidates = [os.environ.get(name) for name in ("TMPDIR", "TEMP", "TMP")]
    candidates += ["/tmp", "/var/tmp", "/usr/tmp"]  # noqa: S108 (tempfile's own list)
    if sys.platform != "win32":
        for candidate in candidates:
            if candidate and os.path.isdir(candidate) and os.access(candidate, os.W_OK | os.X_OK):
                return os.path.abspath(candidate)
    import tempfile

    return tempfile.gettempdir()


def _private_dir(base: str) -> str:
    """``mkdtemp``'s promise (a new directory, 0700, an unguessable name) without
    importing tempfile on the host's way to starting its daemon."""
    for _ in range(100):
        path = os.path.join(base, f"{DIR_PREFIX}{os.getpid()}-{os.urandom(6).hex()}")
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no free directory name in {base}")


def remove_stale_dirs(base: str) -> None:
    """Remove control directories of hosts that died without cleaning up (SIGKILL)."""
    import contextlib

    import psutil

    with contextlib.suppress(OSError):
        for entry in os.scandir(base):
            if not entry.name.startswith(DIR_PREFIX) or not entry.is_dir(follow_symlinks=False):
                continue
            pid_text = entry.name[len(DIR_PREFIX) :].split("-", 1)[0]
            if pid_text.isdigit() and not psutil.pid_exists(int(pid_text)):
                _rmtree(entry.path)


def control_base() -> str:
    base = base_dir()
    if len(base) > MAX_UNIX_PATH - 40:
        base = "/tmp"  # noqa: S108 (a 0700 mkdtemp directory inside it)
    return base


def bind_control_socket() -> tuple[_socket.socket, str, str]:
    """Unix, before trio and ``socket`` are imported: (listening ``_socket`` socket,
    ``unix:`` address, its 0700 directory); ``open_control_listener`` adopts them.

    Stale directories of dead hosts are not removed here (that needs psutil and is
    not urgent): the host does it once it runs (``remove_stale_dirs``).
    """
    import _socket

    directory = _private_dir(control_base())
    path = os.path.join(directory, "control")
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(16)
    except OSError:
        sock.close()
        _rmtree(directory)
        raise
    return sock, f"unix:{path}", directory


async def open_control_listener(
    bound: tuple[_socket.socket, str, str] | None = None,
) -> ControlListener:
    """The control listener: ``bound`` (from ``bind_control_socket``) or a new one."""
    import socket
    from pathlib import Path

    import trio

    if sys.platform == "win32":
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        await sock.bind(("127.0.0.1", 0))
        sock.listen(4)
        port = sock.getsockname()[1]
        return ControlListener(trio.SocketListener(sock), f"tcp:127.0.0.1:{port}", None)
    if bound is not None:
        from jst.host.launch import adopt_socket

        raw, address, bound_directory = bound
        unix_sock = adopt_socket(raw)
        unix_sock.setblocking(False)
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(unix_sock))
        return ControlListener(listener, address, Path(bound_directory))
    base = control_base()
    remove_stale_dirs(base)
    directory = _private_dir(base)
    path = os.path.join(directory, "control")
    try:
        listener = await _unix_listener(path)
    except OSError:
        _rmtree(directory)
        raise
    return ControlListener(listener, f"unix:{path}", Path(directory))
