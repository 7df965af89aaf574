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
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from jst import config

DAEMON_ENV = "JST_IO_DAEMON"  # a test (or a packager) may name the daemon executable
TOKEN_ENV = "JST_IO_DAEMON_TOKEN"  # noqa: S105 (a variable name)
DEV_ORIGINS_ENV = "JSTORRENT_DEV_ORIGINS"
LISTEN_BACKLOG = 1024  # as the daemon's own (browsers open bursts of connections)
CAN_PASS_FDS = sys.platform != "win32"


def daemon_command() -> list[str]:
    """How to run the io-daemon: ``$JST_IO_DAEMON``, else next to us, else ``python -m``."""
    override = os.environ.get(DAEMON_ENV)
    if override:
        return [override]
    here = Path(sys.argv[0]).resolve().parent
    suffix = ".exe" if sys.platform == "win32" else ""
    for name in ("jst-io-daemon", "jstorrent-io-daemon"):
        candidate = here / f"{name}{suffix}"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return [str(candidate)]
    return [sys.executable, "-m", "jst.daemon.cli"]


def new_token() -> str:
    """A fresh UUID v4, lowercase and hyphenated (§2.4.1): ``str(uuid.uuid4())``, without
    importing uuid (and platform, shutil...) before the daemon is started."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # the RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def bind_daemon_socket(port: int = 0) -> socket.socket:
    """The daemon's listening socket on 127.0.0.1 (``port``, else any free port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))  # the old port, after a stop
    except OSError:
        sock.bind(("127.0.0.1", 0))
    sock.listen(LISTEN_BACKLOG)
    sock.set_inheritable(False)  # passed to our daemon only, via pass_fds
    return sock


def _environment(token: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop(TOKEN_ENV, None)  # ours is the only token our daemon may take
    if token is not None:
        env[TOKEN_ENV] = token
    dev_origins = config.env_setting("DEV_ORIGINS")
    if dev_origins is not None:
        env[DEV_ORIGINS_ENV] = dev_origins
    return env


def spawn(
    command: Sequence[str],
    token: str,
    listener: socket.socket | None,
    port: int,
    install_id: str,
    control_address: str,
) -> subprocess.Popen[bytes]:
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
        env = _environment(token)
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env)
    assert listener is not None
    token_read, token_write = os.pipe()
    try:
        proc = subprocess.Popen(
            [*argv, "--token-fd", str(token_read)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            env=_environment(None),
            pass_fds=(listener.fileno(), token_read),
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
        listener: socket.socket,
        control: tuple[socket.socket, str, Path],
        proc: subprocess.Popen[bytes] | None,
        error: OSError | None,
    ) -> None:
        self.command = command
        self.token = token
        self.listener = listener
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
        listener = bind_daemon_socket()
    except OSError:
        import shutil

        control[0].close()
        shutil.rmtree(control[2], ignore_errors=True)
        return None
    proc: subprocess.Popen[bytes] | None = None
    error: OSError | None = None
    try:
        proc = spawn(command, token, listener, 0, "", control[1])
    except OSError as exc:
        error = exc
    return Prelaunched(command, token, listener, control, proc, error)
