"""A blocking client of ``service.sock``, and starting a service on demand (no trio).

Used by the one-shot host (which must answer Chrome within milliseconds and so avoids
importing trio) and by ``jst service start|stop|status``.

Wire format of ``service.sock``: the client sends one JSON object on one line, the
service answers one JSON object on one line and closes. Requests::

    {"op": "get_browser_endpoint", "installId": <str|null>, "extensionId": <str|null>,
     "pid": <int: the asking process, whose ancestors name the browser>}
        -> {"ip", "port", "token", "version", "roots"} | {"error"}
    {"op": "status"}  -> {"pid", "version", "installs": [{"install_id", "port", "state", ...}]}
    {"op": "stop"}    -> {"stopping": true}

Starting: when nothing answers, ``ensure_service`` takes ``spawn.lock`` (so twenty
one-shot hosts at once start one service, not twenty), looks again, and only then
starts ``jst service run`` detached: a new session, stdio on the null device and every
inherited descriptor closed (Chrome waits for its pipes to close, SERVICE.md §6). The
service itself holds ``service.lock`` for its whole life, so even two starts would leave
one service.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path

from jst.service import paths

TYPE_CHECKING = False  # not ``typing``: the one-shot host answers within ms (issue 17)
if TYPE_CHECKING:
    from typing import Any

MAX_REPLY = 4 * 1024 * 1024
START_TIMEOUT = 3.0  # SERVICE.md §2: bounded to 3 s
POLL = 0.02
LOCK_GRACE = 1.0  # beyond the holder's bound, for it to release the lock


class ServiceUnreachable(OSError):
    """Nothing listens on service.sock (or it refused us)."""


class ServiceError(Exception):
    """The service answered something that is not a reply."""


def _connect(path: Path, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except OSError as exc:
        sock.close()
        raise ServiceUnreachable(f"no service at {path}: {exc}") from exc
    return sock


def request(message: dict[str, Any], timeout: float, path: Path | None = None) -> dict[str, Any]:
    """One request/reply on service.sock, bounded by ``timeout`` seconds in total."""
    deadline = time.monotonic() + timeout
    sock = _connect(path or paths.socket_path(), timeout)
    with sock:
        try:
            sock.sendall(json.dumps(message).encode() + b"\n")
            data = bytearray()
            while not data.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ServiceError("the service did not answer in time")
                sock.settimeout(remaining)
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
                if len(data) > MAX_REPLY:
                    raise ServiceError("reply too large")
        except TimeoutError as exc:
            raise ServiceError("the service did not answer in time") from exc
        except OSError as exc:
            raise ServiceError(f"the service broke off: {exc}") from exc
    try:
        reply = json.loads(data)
    except ValueError as exc:
        raise ServiceError(f"the service sent no valid reply: {exc}") from exc
    if not isinstance(reply, dict):
        raise ServiceError("the service sent no valid reply")
    return reply


def answers(path: Path | None = None) -> bool:
    """Is a service listening on service.sock (connect only)?"""
    try:
        _connect(path or paths.socket_path(), 0.5).close()
    except ServiceUnreachable:
        return False
    return True


def service_command(extra: list[str] | None = None) -> list[str]:
    """How to run ``jst service run``: the ``jst`` next to us, else ``python -m``."""
    here = Path(sys.argv[0]).resolve().parent
    candidate = here / ("jst.exe" if sys.platform == "win32" else "jst")
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return [str(candidate), "service", "run", *(extra or [])]
    return [sys.executable, "-m", "jst.service.cli", "run", *(extra or [])]


def spawn_detached(extra: list[str] | None = None) -> int:
    """Start ``jst service run`` in its own session with nothing of ours; its pid."""
    import subprocess  # only when starting one: the common path answers without it

    kwargs: dict[str, Any] = {}
    if sys.platform == "win32":
        kwargs["creationflags"] = 0x00000008 | 0x00000200  # DETACHED_PROCESS | NEW_GROUP
    else:
        kwargs["start_new_session"] = True
    proc = subprocess.Popen(
        service_command(extra),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=True,
        **kwargs,
    )
    return proc.pid


def ensure_service(timeout: float = START_TIMEOUT, extra: list[str] | None = None) -> bool:
    """True once a service answers; starts one (at most one at a time) if none does."""
    directory = paths.runtime_dir()
    sock_path = paths.socket_path(directory)
    if answers(sock_path):
        return True
    from jst.host.filelock import LockTimeout, locked

    try:
        # A host waiting here is waiting for another's start (bounded by its own 3 s).
        with locked(directory / paths.SPAWN_LOCK_NAME, timeout=timeout + LOCK_GRACE):
            if answers(sock_path):
                return True
            spawn_detached(extra)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if answers(sock_path):
                    return True
                time.sleep(POLL)
    except LockTimeout:
        pass
    with contextlib.suppress(OSError):
        return answers(sock_path)
    return False
