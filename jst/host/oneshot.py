"""One-shot endpoint discovery (SERVICE.md §2): ``get_browser_endpoint`` on stdin.

``chrome.runtime.sendNativeMessage`` starts ``jst-native-host`` with one message and
closes stdin. When that first message is ``{"type": "get_browser_endpoint", ...}`` (and
has no ``op``) the host does not become a host at all: it asks the jst service over
``service.sock`` (starting one detached if none answers, bounded to 3 s), writes exactly
one reply and exits 0. It never starts a daemon and never listens on a port.

Reply: ``{"ip", "port", "token", "version", "roots"}`` or ``{"error": "<reason>"}``.

Deciding (SERVICE.md §6): ``peek_first_frame`` reads the first frame before anything
else happens. Chrome writes it at once, so the wait is bounded by ``PEEK_TIMEOUT``: a
client that starts a host and sends nothing (the original's link-handler users) gets a
normal host after that pause, and bytes read but not used go to the normal host path
unchanged (``prefixed``). This module imports no trio and nothing heavy on the one-shot
path: the answer is due within milliseconds of the spawn.
"""

from __future__ import annotations

import os
import struct
import sys
import time

# Not ``typing``: this path runs before the host starts its daemon (issue 17).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

ONESHOT_TYPE = "get_browser_endpoint"
# Chrome has written the message before we run; a client that sends nothing pays this.
PEEK_TIMEOUT = 0.25
FRAME_TIMEOUT = 1.0  # once a frame has begun, the rest of it
MAX_ONESHOT_FRAME = 64 * 1024  # a longer first frame is a normal request, never ours
ANSWER_TIMEOUT = 15.0  # the service may have to start a daemon (its own bound: 8 s)
MAX_INSTALL_ID = 256
REPLY_KEYS = ("ip", "port", "token", "version", "roots")
EXTENSION_PREFIX = "chrome-extension://"


def _wait_readable(fd: int, timeout: float) -> bool:
    import select

    if timeout <= 0:
        return False
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
    except (OSError, ValueError):
        return False
    return bool(ready)


def _read_exactly(fd: int, want: int, buffer: bytearray, deadline: float) -> bool:
    """Append until ``buffer`` holds ``want`` bytes; False on EOF, error or deadline."""
    while len(buffer) < want:
        if not _wait_readable(fd, deadline - time.monotonic()):
            return False
        try:
            chunk = os.read(fd, want - len(buffer))
        except OSError:
            return False
        if not chunk:
            return False
        buffer += chunk
    return True


def peek_first_frame(fd: int = 0) -> tuple[bytes, dict[str, Any] | None]:
    """(bytes consumed, the one-shot message or ``None``). Windows: never one-shot."""
    if sys.platform == "win32":
        return b"", None  # select() cannot wait on a pipe there; not built
    buffer = bytearray()
    if not _wait_readable(fd, PEEK_TIMEOUT):
        return b"", None
    deadline = time.monotonic() + FRAME_TIMEOUT
    if not _read_exactly(fd, 4, buffer, deadline):
        return bytes(buffer), None
    (length,) = struct.unpack("<I", buffer[:4])
    if length > MAX_ONESHOT_FRAME:
        return bytes(buffer), None
    if not _read_exactly(fd, 4 + length, buffer, deadline):
        return bytes(buffer), None
    body = bytes(buffer[4:])
    if ONESHOT_TYPE.encode() not in body and b"\\" not in body and b"\0" not in body:
        # Not ours, and known without parsing: JSON can only spell the type some other
        # way with an escape (or in UTF-16 or -32, whose ASCII has NULs). So the
        # handshake's way to its daemon imports no json (nor the re it loads, ~5 ms).
        return bytes(buffer), None
    import json

    try:
        message = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return bytes(buffer), None
    if isinstance(message, dict) and message.get("type") == ONESHOT_TYPE and "op" not in message:
        return bytes(buffer), message
    return bytes(buffer), None


def extension_id(argv: Sequence[str]) -> str | None:
    for arg in argv:
        if arg.startswith(EXTENSION_PREFIX):
            return arg[len(EXTENSION_PREFIX) :].rstrip("/")
    return None


def answer(message: dict[str, Any], argv: Sequence[str]) -> dict[str, Any]:
    """The one reply to a ``get_browser_endpoint`` message."""
    install_id = message.get("installId")
    if install_id is not None and (
        not isinstance(install_id, str) or not install_id or len(install_id) > MAX_INSTALL_ID
    ):
        return {"error": "'installId' must be a non-empty string of at most 256 characters"}
    from jst.service import client, paths

    request = {
        "op": ONESHOT_TYPE,
        "installId": install_id,
        "extensionId": extension_id(argv),
        "pid": os.getpid(),
    }
    try:
        # Ask at once (the runtime directory checked first, as ensure_service does); only
        # when nothing listens, start a service. Not ensure_service then request: its
        # probe is one more connection the service must take before ours (issue 17).
        sock_path = paths.socket_path(paths.runtime_dir())
        try:
            reply = client.request(request, timeout=ANSWER_TIMEOUT, path=sock_path)
        except client.ServiceUnreachable:
            if not client.ensure_service():
                return {"error": "The jst service did not start within 3 s (see jst-service.log)"}
            reply = client.request(request, timeout=ANSWER_TIMEOUT)
    except paths.RuntimeDirError as exc:
        return {"error": f"Cannot use the jst runtime directory: {exc}"}
    except (client.ServiceUnreachable, client.ServiceError) as exc:
        return {"error": f"The jst service did not answer: {exc}"}
    except OSError as exc:
        return {"error": f"Cannot reach the jst service: {exc}"}
    if isinstance(reply.get("error"), str):
        return {"error": reply["error"]}
    if not all(key in reply for key in REPLY_KEYS):
        return {"error": "The jst service sent an incomplete endpoint"}
    return {key: reply[key] for key in REPLY_KEYS}


def write_frame(fd: int, message: dict[str, Any]) -> None:
    import json

    body = json.dumps(message, separators=(",", ":")).encode()
    data = struct.pack("<I", len(body)) + body
    while data:
        written = os.write(fd, data)
        data = data[written:]


def run(message: dict[str, Any], argv: Sequence[str]) -> int:
    reply = answer(message, argv)
    try:
        write_frame(1, reply)
    except OSError:
        return 1  # Chrome has gone; nothing to tell
    return 0


def prefixed(prefix: bytes, stream: Any) -> Any:
    """``stream`` (a trio ReceiveStream) with ``prefix`` in front: the bytes the peek
    read go to the normal host exactly as they came. Nothing read: ``stream`` itself."""
    if not prefix:
        return stream
    import trio

    class Prefixed(trio.abc.ReceiveStream):
        def __init__(self) -> None:
            self._prefix = prefix

        async def receive_some(self, max_bytes: int | None = None) -> bytes:
            if self._prefix:
                await trio.lowlevel.checkpoint()
                n = len(self._prefix) if max_bytes is None else max_bytes
                data, self._prefix = self._prefix[:n], self._prefix[n:]
                return data
            return bytes(await stream.receive_some(max_bytes))

        async def aclose(self) -> None:
            await stream.aclose()

    return Prefixed()
