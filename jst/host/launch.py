"""Starting the io-daemon process, with no trio (the host's first act, issue 17).

``jst-native-host`` starts its daemon before importing trio or anything else, so that
the daemon's start (an interpreter and ~150 ms of imports) runs while the host does its
own, instead of after the handshake. Everything the daemon needs at spawn is known by
then:

* its listening socket, bound here and passed as ``--listen-fd`` (Unix): the port is
  known before the daemon exists, and clients wait in the backlog until it accepts;
* its token, fresh, written into a pipe it inherits (``--token-fd``): never on its
  command line (§9.19) and never in its environment, whose initial copy the kernel
  shows in ``/proc/<pid>/environ`` for the process's whole life;
* the host's control address (``--host-control``), where it says ``ready`` and then
  waits for its first ``config`` (install id, roots, extension id: what the browser's
  handshake names) before serving. See ``jst/daemon/hostlink.py``.

Windows passes neither sockets nor pipes this way: there the daemon binds ``--port``
itself, its token travels in its environment, and the host starts it at the first
handshake (``prelaunch`` returns ``None``).

What the host imports before the spawn is part of every cold start, so this module
loads nothing but ``os``, ``sys`` and ``_socket`` at import, and ``prelaunch`` nothing
more: its sockets are ``_socket`` objects (``socket`` loads ``enum``, ~5 ms here), the
daemon is started with ``os.posix_spawnp`` (``subprocess`` would add threading and
selectors, ~8 ms), and paths are strings (``pathlib`` and ``re``, ~4 ms). Once trio runs,
the host turns the sockets into ``socket.socket`` objects (``adopt_socket``).
``posix_spawn`` has no ``close_fds``: ``spawn_passing`` gets the same result by marking
every other descriptor close-on-exec first (Python opens its own that way already; this
catches any a launcher leaked to us). Restarts, later, use ``subprocess.Popen``.
"""

from __future__ import annotations

import _socket
import os
import sys

from jst import config

TYPE_CHECKING = False  # not ``typing``: imported before the host starts its daemon
if TYPE_CHECKING:
    import socket
    import subprocess
    from collections.abc import Sequence

DAEMON_ENV = "JST_IO_DAEMON"  # a test (or a packager) may name the daemon executable
TOKEN_ENV = "JST_IO_DAEMON_TOKEN"  # noqa: S105 (a variable name)
DEV_ORIGINS_ENV = "JSTORRENT_DEV_ORIGINS"
LISTEN_BACKLOG = 1024  # as the daemon's own (browsers open bursts of connections)
CAN_PASS_FDS = sys.platform != "win32"
# Where a process lists all its open descriptors. Not /dev/fd on the BSDs: there it may
# list only 0-2 (FreeBSD without fdescfs) or a fixed 0-63, and they get Popen instead.
FD_DIRECTORY = {"linux": "/proc/self/fd", "darwin": "/dev/fd"}.get(sys.platform)


def daemon_command() -> list[str]:
    """How to run the io-daemon: ``$JST_IO_DAEMON``, else next to us, else ``python -m``."""
    override = os.environ.get(DAEMON_ENV)
    if override:
        return [override]
    here = os.path.dirname(os.path.realpath(sys.argv[0]))
    suffix = ".exe" if sys.platform == "win32" else ""
    for name in ("jst-io-daemon", "jstorrent-io-daemon"):
        candidate = os.path.join(here, f"{name}{suffix}")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return [candidate]
    return [sys.executable, "-m", "jst.daemon.cli"]


def new_token() -> str:
    """A fresh UUID v4, lowercase and hyphenated (§2.4.1): ``str(uuid.uuid4())``, without
    importing uuid (and platform, shutil...) before the daemon is started."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # the RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def bind_raw_daemon_socket(port: int = 0) -> _socket.socket:
    """The daemon's listening socket on 127.0.0.1 (``port``, else any free port), not
    inheritable (it is passed to our daemon only)."""
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    try:
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))  # the old port, after a stop
        except OSError:
            sock.bind(("127.0.0.1", 0))
        sock.listen(LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def adopt_socket(raw: _socket.socket) -> socket.socket:
    """``raw`` as a ``socket.socket`` (same descriptor, family and type)."""
    import socket

    return socket.socket(fileno=raw.detach())


def bind_daemon_socket(port: int = 0) -> socket.socket:
    return adopt_socket(bind_raw_daemon_socket(port))


def _environment(token: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop(TOKEN_ENV, None)  # ours is the only token our daemon may take
    if token is not None:
        env[TOKEN_ENV] = token
    dev_origins = config.env_setting("DEV_ORIGINS")
    if dev_origins is not None:
        env[DEV_ORIGINS_ENV] = dev_origins
    return env


class SpawnedChild:
    """A child started by ``spawn_passing``: what the supervisor uses of
    ``subprocess.Popen`` (``pid``, ``poll``, ``returncode``, ``terminate``, ``kill``),
    with its rules: once reaped it is never signalled (its pid may be another
    process's by then), and a child reaped by someone else counts as exited 0."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = 0
            else:
                if pid == self.pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def _signal(self, signum: int) -> None:
        import contextlib

        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # reaped by someone else
                os.kill(self.pid, signum)

    def terminate(self) -> None:
        import signal

        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        import signal

        self._signal(signal.SIGKILL)


if TYPE_CHECKING:
    from typing import TypeAlias

    Child: TypeAlias = "subprocess.Popen[bytes] | SpawnedChild"


def _close_on_exec_except(keep: Sequence[int]) -> bool:
    """Mark every descriptor above 2 but ``keep`` close-on-exec: ``close_fds`` done on
    our side of ``posix_spawn``. False if this system cannot list them all."""
    if FD_DIRECTORY is None:
        return False
    try:
        names = os.listdir(FD_DIRECTORY)
    except OSError:
        return False
    for name in names:
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                if os.get_inheritable(fd):
                    os.set_inheritable(fd, False)
            except OSError:
                pass  # the listing's own descriptor, closed by now
    return True


def spawn_passing(
    argv: list[str], env: dict[str, str], pass_fds: Sequence[int], *, early: bool
) -> Child:
    """Start ``argv`` with stdin and stdout on the null device, stderr ours, and
    ``pass_fds`` (only they) inherited, as ``Popen(..., pass_fds=...)`` does.

    ``early`` (before trio and ``subprocess`` are loaded, one thread): with
    ``posix_spawn``. One difference a child can see: glibc's ``posix_spawn`` leaves the
    two signals glibc keeps for itself (32 and 33, which no program may handle) ignored
    rather than default. Later (restarts, from a worker thread while other threads
    run): with ``Popen``, which closes the other descriptors in the child itself, so no
    descriptor made meanwhile by another thread can slip through.
    """
    if not early or not _close_on_exec_except(pass_fds):
        import subprocess

        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env, pass_fds=pass_fds
        )
    # ``signal`` would load enum; its C half has the numbers (and no type stubs).
    import _signal  # type: ignore[import-not-found]

    for fd in pass_fds:
        os.set_inheritable(fd, True)
    try:
        pid = os.posix_spawnp(
            argv[0],
            argv,
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            ],
            # Popen's restore_signals: Python ignores these, a new program should not.
            setsigdef=[getattr(_signal, n) for n in ("SIGPIPE", "SIGXFSZ") if hasattr(_signal, n)],
        )
    finally:
        for fd in pass_fds:
            os.set_inheritable(fd, False)
    return SpawnedChild(pid)


def spawn(
    command: Sequence[str],
    token: str,
    listener: socket.socket | _socket.socket | None,
    port: int,
    install_id: str,
    control_address: str,
    *,
    early: bool = False,
) -> Child:
    """Start one daemon process. Its stdin and stdout are the null device (§9.20: the
    browser's pipes are ours alone; the port comes over the control channel), stderr is
    ours (the browser's log). Raises ``OSError`` when it cannot be started at all."""
    where = ["--port", str(port)] if listener is None else ["--listen-fd", str(listener.fileno())]
    argv = [
        *command,
        *where,
        "--parent-pid", str(os.getpid()),
        "--install-id", install_id,
        "--host-control", control_address,
    ]  # fmt: skip
    if not CAN_PASS_FDS:
        import subprocess

        env = _environment(token)
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env)
    assert listener is not None
    token_read, token_write = os.pipe()
    try:
        proc = spawn_passing(
            [*argv, "--token-fd", str(token_read)],
            _environment(None),
            (listener.fileno(), token_read),
            early=early,
        )
        # A 37-byte write into an empty pipe never blocks; the daemon reads it at start.
        os.write(token_write, token.encode() + b"\n")
    finally:
        os.close(token_read)
        os.close(token_write)
    return proc


class Prelaunched:
    """What ``prelaunch`` made: the daemon process and everything it was given."""

    def __init__(
        self,
        command: list[str],
        token: str,
        listener: _socket.socket,
        control: tuple[_socket.socket, str, str],
        proc: Child | None,
        error: OSError | None,
    ) -> None:
        self.command = command
        self.token = token
        self.listener = listener  # ``adopt_socket`` makes it a socket.socket
        self.control = control  # (listening Unix socket, its address, its directory)
        self.proc = proc  # None: it could not be started (``error`` says why)
        self.error = error


def prelaunch() -> Prelaunched | None:
    """Start the daemon now, before the handshake (Unix); ``None`` where we cannot."""
    if not CAN_PASS_FDS:
        return None
    from jst.host.control_server import bind_control_socket

    try:
        control = bind_control_socket()
    except OSError:
        return None  # the host tries again once it runs, and reports what fails then
    command = daemon_command()
    token = new_token()
    try:
        listener = bind_raw_daemon_socket()
    except OSError:
        import shutil

        control[0].close()
        shutil.rmtree(control[2], ignore_errors=True)
        return None
    proc: Child | None = None
    error: OSError | None = None
    try:
        proc = spawn(command, token, listener, 0, "", control[1], early=True)
    except OSError as exc:
        error = exc
    return Prelaunched(command, token, listener, control, proc, error)
