"""``GET`` / ``HEAD /stream/<token>``: byte ranges of a file that is still arriving.

The first half is sans-I/O (``parse_range``, ``response_headers``); the second is the
thin trio layer that serves one request on the HTTP connection's own socket, called
from ``server.HttpConnection.run`` (the URL is a capability: no daemon token, §2).

Body bytes go from the file to the socket with ``os.sendfile`` (STREAMING.md §5): h11
is told about each run of bytes through ``send_with_data_passthrough`` with a
placeholder that only has a length, so it still counts towards ``Content-Length`` and
keep-alive keeps working; the bytes themselves never enter Python. ``sendfile`` runs
on the non-blocking socket, waits with ``wait_writable`` when the socket is full, and
checkpoints after each call so a fast client cannot starve the session that would
deliver the next STREAM_HAVE.

A reader blocked on a missing byte (``wait_available``) sleeps on the stream's
``changed`` event, sends one STREAM_NEED for the range that starts there and again only
when that range is no longer inside what it already asked for, and gives up after
``STALL_SECONDS`` with nothing arriving. Beside every body runs a watcher of the
client's side of the socket (a ``MSG_PEEK`` receive): EOF cancels the body at once,
waiting or sending; a pipelined request merely ends the watch. Any interrupted body
leaves h11 mid-message: the connection is then closed, never reused (``serve`` returns
False).

A reader that stops reading (a paused player, or anyone holding the URL who connects and
never reads) fills the socket; every wait for it to take more bytes is bounded by
``SEND_STALL_SECONDS``, after which its response ends the same way, so it cannot hold a
connection, an open file and a full socket buffer forever.
"""

from __future__ import annotations

import http
import logging
import os
import re
import socket

import h11
import trio

from jst.daemon.http import STREAM_PREFIX, Request
from jst.daemon.state import DaemonState
from jst.daemon.streams import (
    MAX_READERS_PER_STREAM,
    Stream,
    StreamClosed,
    hub,
    open_file,
)
from jst.daemon.websocket import STREAM_ERRORS

log = logging.getLogger("jst.daemon.stream")

# §2: a reader that waits this long with nothing arriving has its response ended.
STALL_SECONDS = 60.0
# The other direction: a client that takes no byte of its response for this long has it
# ended (connection closed, file closed). Longer than the 10 s the file routes allow
# (connection.STALL_SECONDS) because a paused player legitimately stops reading with its
# connection open, and one that resumes within a minute should not have to reconnect;
# the same as STALL_SECONDS because past that players recover the same way: a new
# request with a Range. Checked per wait (each time the kernel takes bytes the clock
# starts again), so a slow but steady reader is never cut.
SEND_STALL_SECONDS = 60.0
# Where the OS has no sendfile (Windows), bodies are read and sent in pieces this size.
FALLBACK_PIECE = 1024 * 1024
# One sendfile call never asks for more (Linux caps a call near 2 GiB anyway); it
# keeps the count within what every platform's size_t and off_t arithmetic accepts.
SENDFILE_MAX = 1 << 30
_HAS_SENDFILE = hasattr(os, "sendfile")

# `bytes=a-b`, `bytes=a-`, `bytes=-n`, one range only. Twenty digits hold any u64; a
# longer number is not a range we could serve, so the header is ignored (RFC 9110
# allows ignoring Range), as are several ranges (`,`) and other units.
_RANGE_RE = re.compile(rb"[ \t]*bytes[ \t]*=[ \t]*([0-9]{0,20})[ \t]*-[ \t]*([0-9]{0,20})[ \t]*")


class Unsatisfiable:
    """The Range starts at or past the end of the file: 416."""


UNSATISFIABLE = Unsatisfiable()


def parse_range(value: bytes | None, length: int) -> tuple[int, int] | Unsatisfiable | None:
    """The half-open byte range a ``Range`` header asks for; None means the whole file."""
    if value is None:
        return None
    match = _RANGE_RE.fullmatch(value)
    if match is None:
        return None
    first, last = match.groups()
    if not first:
        if not last:
            return None
        suffix = int(last)
        if suffix == 0 or length == 0:
            return UNSATISFIABLE
        return max(0, length - suffix), length
    start = int(first)
    if last and int(last) < start:
        return None  # an invalid range is ignored, not refused (RFC 9110 §14.1.1)
    if start >= length:
        return UNSATISFIABLE
    return start, length if not last else min(int(last) + 1, length)


def response_headers(
    status: int, start: int, end: int, length: int, content_type: str
) -> list[tuple[bytes, bytes]]:
    """The headers every ``/stream`` answer carries (§2), for a body ``[start, end)``."""
    headers = [
        (b"accept-ranges", b"bytes"),
        (b"content-type", content_type.encode("ascii")),
        (b"content-length", str(end - start).encode()),
        (b"cache-control", b"no-store"),
    ]
    if status == 206:
        headers.append((b"content-range", f"bytes {start}-{end - 1}/{length}".encode()))
    elif status == 416:
        headers.append((b"content-range", f"bytes */{length}".encode()))
    return headers


# ---------------------------------------------------------------------------------------
# The trio layer


class ResponseEnded(Exception):
    """The body cannot be completed: client gone, stalled, short file, stream closed."""


class _Placeholder:
    """Stands for ``size`` body bytes that ``os.sendfile`` writes (h11 only counts)."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size


def _reason(status: int) -> bytes:
    return http.HTTPStatus(status).phrase.encode("ascii")


async def _send(stream: trio.SocketStream, data: bytes) -> None:
    with trio.move_on_after(SEND_STALL_SECONDS):  # a client that reads nothing (see top)
        try:
            await stream.send_all(data)
        except STREAM_ERRORS as exc:
            raise ResponseEnded from exc
        return
    raise ResponseEnded


async def _wait_writable(sock: trio.socket.SocketType) -> None:
    """Wait until the client has taken bytes; ``ResponseEnded`` if it takes none for
    ``SEND_STALL_SECONDS`` (a new wait, and so a new clock, after each write)."""
    with trio.move_on_after(SEND_STALL_SECONDS):
        await trio.lowlevel.wait_writable(sock)
        return
    raise ResponseEnded


async def serve(
    state: DaemonState, conn: h11.Connection, stream: trio.SocketStream, req: Request
) -> bool:
    """Answer one ``/stream`` request; True if the connection may serve another."""
    try:
        return await _serve(state, conn, stream, req)
    except ResponseEnded:
        return False
    except Exception:
        log.exception("unexpected error serving a stream")  # never the URL: a capability
        return False


async def _serve(
    state: DaemonState, conn: h11.Connection, stream: trio.SocketStream, req: Request
) -> bool:
    cors = state.cors.response_headers(req, state.extension_id)
    token = req.raw_path[len(STREAM_PREFIX) :].decode("ascii", "replace")
    found = hub(state).lookup(token)
    if found is None:
        return await _simple(conn, stream, 404, cors)
    if req.method not in ("GET", "HEAD"):
        return await _simple(conn, stream, 405, [(b"allow", b"GET, HEAD"), *cors])
    if len(found.readers) >= MAX_READERS_PER_STREAM:
        return await _simple(conn, stream, 503, [(b"retry-after", b"1"), *cors])
    length = found.length
    wanted = parse_range(req.header(b"range"), length)
    if isinstance(wanted, Unsatisfiable):
        status, start, end = 416, 0, 0
    elif wanted is None:
        status, start, end = 200, 0, length
    else:
        status, (start, end) = 206, wanted
    headers = response_headers(status, start, end, length, found.content_type) + cors
    head = conn.send(h11.Response(status_code=status, headers=headers, reason=_reason(status)))
    assert head is not None
    if req.method == "HEAD" or start == end:
        # HEAD: the headers of the GET and no body (h11 sends none for HEAD either).
        end_of_message = conn.send(h11.EndOfMessage())
        await _send(stream, head + (end_of_message or b""))
        return True
    with trio.CancelScope() as scope:
        found.readers.add(scope)  # Stream.close cancels this response
        try:
            await _send(stream, head)  # headers complete before the first sendfile
            await send_body(found, conn, stream, start, end)
            return True
        finally:
            found.readers.discard(scope)
    return False  # cancelled: the stream closed mid-body


async def _simple(
    conn: h11.Connection,
    stream: trio.SocketStream,
    status: int,
    headers: list[tuple[bytes, bytes]],
) -> bool:
    headers = [(b"content-length", b"0"), *headers]
    data = conn.send(h11.Response(status_code=status, headers=headers, reason=_reason(status)))
    assert data is not None
    await _send(stream, data + (conn.send(h11.EndOfMessage()) or b""))
    return True


async def send_body(
    found: Stream, conn: h11.Connection, stream: trio.SocketStream, start: int, end: int
) -> None:
    """The body ``[start, end)``, run by available run; ``ResponseEnded`` if cut short.

    A watcher task lives beside the body for the whole response: when the client
    leaves it cancels the body at once, whether that is waiting or sending.
    """
    sock = stream.socket
    complete = False
    # Opened before any wait when the file exists, so a wake-up pays no thread hop.
    fd = await _open(found, missing_ok=True)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_client, sock, nursery.cancel_scope)
            try:
                pos = start
                while pos < end:
                    run_end = min(await wait_available(found, pos, end), end)
                    if fd is None:
                        fd = await _open(found, missing_ok=False)
                    assert fd is not None
                    conn.send_with_data_passthrough(h11.Data(data=_Placeholder(run_end - pos)))  # type: ignore[arg-type]
                    await send_file_range(sock, fd, pos, run_end - pos, stream)
                    pos = run_end
                conn.send(h11.EndOfMessage())
                complete = True
            except ResponseEnded:
                pass  # (raised again below: a nursery would wrap it in a group)
            nursery.cancel_scope.cancel()
    finally:
        if fd is not None:
            os.close(fd)
    if not complete:
        raise ResponseEnded


async def _open(found: Stream, *, missing_ok: bool) -> int | None:
    try:
        return int(await trio.to_thread.run_sync(open_file, found.target))
    except FileNotFoundError:
        if missing_ok:
            return None  # not written yet: opened when its first bytes are available
        raise ResponseEnded from None
    except Exception as exc:  # other OSErrors, the root/escape checks (HttpError)
        raise ResponseEnded from exc


async def _watch_client(sock: trio.socket.SocketType, body: trio.CancelScope) -> None:
    """End the response as soon as the client closes its side (§5 "a client that left").

    A peek tells EOF (gone: cancel the body) from a pipelined request (still there: stop
    watching, the next request is read after this response).
    """
    try:
        data = await sock.recv(1, socket.MSG_PEEK)
    except OSError:
        data = b""
    if not data:
        body.cancel()


async def wait_available(found: Stream, pos: int, end: int) -> int:
    """The end of the available run containing ``pos``, waiting for it if needed."""
    run_end = found.available.covering_end(pos)
    if run_end is not None:
        return run_end
    deadline = trio.current_time() + STALL_SECONDS
    asked_end = -1
    try:
        with trio.fail_at(deadline):
            while True:
                if found.closed:
                    raise ResponseEnded
                run_end = found.available.covering_end(pos)
                if run_end is not None:
                    return run_end
                # Within one wait the range only shrinks (the next available byte can
                # only come closer), so this sends exactly one STREAM_NEED per wait.
                _start, need_end = found.need_range(pos, end)
                if need_end > asked_end:
                    await found.send_need(pos, need_end)
                    asked_end = need_end
                await found.changed.wait()
    except (trio.TooSlowError, StreamClosed) as exc:
        raise ResponseEnded from exc


async def send_file_range(
    sock: trio.socket.SocketType, fd: int, offset: int, count: int, stream: trio.SocketStream
) -> None:
    """``count`` bytes of ``fd`` from ``offset`` to the socket (see the module notes)."""
    if not _HAS_SENDFILE:
        await _send_file_range_copying(fd, offset, count, stream)
        return
    out = sock.fileno()
    while count:
        asked = min(count, SENDFILE_MAX)
        try:
            sent = os.sendfile(out, fd, offset, asked)
        except BlockingIOError:
            await _wait_writable(sock)
            continue
        except (OSError, OverflowError) as exc:  # EPIPE/ECONNRESET: the client left;
            raise ResponseEnded from exc  # EIO: the file; Overflow: an offset past off_t
        if sent == 0:
            raise ResponseEnded  # the file is shorter than the engine said
        offset += sent
        count -= sent
        if count and sent < asked:
            # The socket buffer is full: the next call would only fail with EAGAIN.
            # Waiting is also this iteration's checkpoint.
            await _wait_writable(sock)
        else:
            await trio.lowlevel.checkpoint()


def _read_at(fd: int, offset: int, size: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(fd, size, offset)
    os.lseek(fd, offset, os.SEEK_SET)
    return os.read(fd, size)


async def _send_file_range_copying(
    fd: int, offset: int, count: int, stream: trio.SocketStream
) -> None:
    while count:
        try:
            data = await trio.to_thread.run_sync(_read_at, fd, offset, min(count, FALLBACK_PIECE))
        except OSError as exc:
            raise ResponseEnded from exc
        if not data:
            raise ResponseEnded
        await _send(stream, data)
        offset += len(data)
        count -= len(data)
