"""One HTTP/1.1 connection: a lean fast path over a raw socket, h11 for everything else.

Design notes
------------
Protocol logic lives elsewhere: ``http.py`` (request rules), ``http1.py`` (the fast head
parser), ``routes.py`` (handlers), ``mux.py`` (the ``/io`` protocol), ``websocket.py``
(frames). This module moves bytes between one socket and those modules: requests are
served in order on a keep-alive connection, and ``GET /io`` with ``Upgrade: websocket``
is handed to the multiplexer after the ``101``. ``server.py`` accepts connections and
keeps the set of them.

Per request, the hot path costs one wait for readability (the request), a ``recv``, the
fast head parse, the handler, and one ``sendmsg`` of head and body (no copy of the body).
The sockets are plain non-blocking stdlib sockets driven with ``wait_readable`` /
``wait_writable``; trio's ``SocketStream`` adds several checkpoints and a lock per call,
which at 16 KiB per request was a large share of the daemon's time. A head the fast
parser does not recognise is served, that one request, by a fresh h11 connection fed the
same bytes; the connection returns to the fast path afterwards if h11 says it may.

Why not hypercorn (which served the daemon until 0.2): the ``/io`` contract needs
several WebSocket frames per socket write, and ASGI has no way to say that; its
per-request overhead capped 16 KiB writes at 2,800 req/s here; and it sent status lines
without a reason phrase, which clients of the original check for (§6.1).

Bounds (issue 12): a new connection must send a whole request head within
``HEAD_SECONDS``; an idle keep-alive connection waits ``keep_alive_seconds`` for its next
head, then ``HEAD_SECONDS`` from the head's first byte (``Server.sweep`` enforces these).
A body, or a response the client does not read, may stall ``STALL_SECONDS`` at a time.
A refused request's body is never waited for: the answer says ``connection: close``, the
write side is shut, and whatever arrives within ``LINGER_SECONDS`` is discarded (so the
client reads the answer instead of a reset), then the socket is closed. An ``/io``
session is a waiting connection too until its AUTH succeeds.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import attrs
import trio

from jst.daemon.errors import Forbidden, HttpError, MethodNotAllowed, PayloadTooLarge
from jst.daemon.http import (
    TEXT_PLAIN,
    Request,
    Response,
    allow_header,
    host_allowed,
    is_stream_request,
    needs_auth,
    parse_u64,
)
from jst.daemon.http1 import (
    MAX_HEAD_SIZE,
    REASONS,
    HeadTooLarge,
    encode_head,
    find_head_end,
    parse_simple_head,
)
from jst.daemon.routes import Context, dispatch

if TYPE_CHECKING:
    import h11

    from jst.daemon.server import Server
    from jst.daemon.state import DaemonState

log = logging.getLogger("jst.daemon.http")

TOO_LARGE = "Failed to buffer the request body: length limit exceeded"
# One receive of a head (and what follows it); bodies are received in place.
RECEIVE_SIZE = 64 * 1024
# A client sends a whole head within this long (the engine's take microseconds).
HEAD_SECONDS = 10.0
# A body, or the reading of our response, may make no progress for this long.
STALL_SECONDS = 10.0
# After refusing a request whose body is still coming: drain this much, this long.
LINGER_SECONDS = 1.0
LINGER_BYTES = 1024 * 1024
# Body buffers up to this size are kept by their connection for the next body of the
# same size (the engine writes and hashes whole pieces of one size); larger ones are
# not kept, so an idle connection holds at most this much.
MAX_SPARE_BODY = 4 * 1024 * 1024


class ClientGone(Exception):
    """The client closed or broke the connection in the middle of a request."""


@attrs.define(eq=False)
class ConnectionState:
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    trusted: bool = False  # has made an authorized request
    deadline: float = math.inf  # while waiting for a head: dropped by ``sweep`` after this
    websocket: trio.CancelScope | None = None  # set while serving an /io session


class HttpConnection:
    def __init__(self, server: Server, sock: socket.socket, track: ConnectionState) -> None:
        self.server = server
        self.sock = sock
        self.track = track
        self.buf = b""  # received, not yet consumed
        self.body_left = 0  # bytes of the current (fast-path) request body not consumed
        self.conn: h11.Connection | None = None  # only while h11 serves a request
        # A large body buffer, reusable once the response that consumed it is sent.
        self.spare_body: bytearray | None = None
        self.body_to_reuse: bytearray | None = None

    # --- raw I/O, each wait bounded by the connection's cancel scope -------------------

    async def wait_readable_for(self, stall: float) -> None:
        """Wait for bytes; the connection ends if none come within ``stall`` seconds."""
        scope = self.track.scope
        scope.deadline = trio.current_time() + stall
        try:
            await trio.lowlevel.wait_readable(self.sock)
        finally:
            scope.deadline = math.inf

    async def receive(self, stall: float) -> bytes:
        """The next bytes (``b""`` at EOF); the connection ends if none come in ``stall``."""
        while True:
            await self.wait_readable_for(stall)
            try:
                return self.sock.recv(RECEIVE_SIZE)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise ClientGone from exc

    async def send_all(self, head: bytes, body: bytes = b"") -> None:
        """Write ``head`` then ``body`` (one ``sendmsg`` when the socket has room)."""
        sock = self.sock
        buffers: list[bytes | memoryview] = [head, body] if body else [head]
        while True:
            try:
                sent = send_buffers(sock, buffers)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                raise ClientGone from exc
            while sent:
                first = len(buffers[0])
                if sent >= first:
                    sent -= first
                    del buffers[0]
                else:
                    buffers[0] = memoryview(buffers[0])[sent:]
                    sent = 0
            if not buffers:
                return
            # The client is not reading: this wait (only) is bounded.
            scope = self.track.scope
            scope.deadline = trio.current_time() + STALL_SECONDS
            try:
                await trio.lowlevel.wait_writable(sock)
            finally:
                scope.deadline = math.inf

    async def next_head(self, first: bool) -> bytes | None:
        """The next request head with its blank line; None if the client closed.

        The wait is bounded by ``Server.sweep`` (through ``track.deadline``), not by a
        cancel-scope deadline: moving a scope's deadline twice per request was a visible
        share of the hot path.
        """
        end = find_head_end(self.buf)
        if end >= 0:
            head, self.buf = self.buf[:end], self.buf[end:]
            await trio.lowlevel.checkpoint()  # pipelined: let other connections run
            return head
        buf: bytes | bytearray = self.buf
        server = self.server
        track = self.track
        track.deadline = trio.current_time() + (
            HEAD_SECONDS if first or buf else server.keep_alive_seconds
        )
        server.begin_wait(track)
        try:
            sock = self.sock
            while True:
                await trio.lowlevel.wait_readable(sock)
                try:
                    data = sock.recv(RECEIVE_SIZE)
                except BlockingIOError:
                    continue
                except OSError:
                    return None
                if not data:
                    return None
                searched = len(buf)
                if not buf:
                    track.deadline = min(track.deadline, trio.current_time() + HEAD_SECONDS)
                    buf = data
                elif isinstance(buf, bytes):
                    buf = bytearray(buf) + data  # a head in pieces: append in place from now
                else:
                    buf += data
                end = find_head_end(buf, searched)
                if end >= 0:
                    self.buf = bytes(buf[end:])
                    return bytes(buf[:end])
        finally:
            server.end_wait(track)

    # --- the connection loop -----------------------------------------------------------

    async def run(self) -> None:
        first = True
        while not self.server.stopping:
            try:
                head = await self.next_head(first)
                if head is None:
                    return
                first = False
                parsed = parse_simple_head(head) if head.endswith(b"\r\n\r\n") else None
                if parsed is None or is_stream_request(parsed[0]):
                    # /stream (streamhttp.py) answers through h11 with sendfile passthrough
                    keep = await self.serve_with_h11(head)
                else:
                    keep = await self.serve_fast(*parsed)
            except HeadTooLarge:
                await self.send_error(431, b"Request header fields too large")
                return
            except ClientGone:
                return
            if not keep:
                return

    async def respond(self, req: Request, read_body: Callable[[int], Awaitable[bytes]]) -> Response:
        """Host check, then dispatch; any ``HttpError`` becomes its response."""
        server = self.server
        try:
            if not host_allowed(req.header(b"host"), server.port):
                raise Forbidden("Invalid Host header")
            ctx = Context(server.state, read_body, server.request_shutdown)
            response = await dispatch(req, ctx)
        except HttpError as exc:
            response = error_response(exc)
        except ClientGone:
            raise
        except Exception:
            log.exception("unexpected error in %s %r", req.method, req.raw_path)
            response = Response(500)
        if not self.track.trusted and response.status not in (401, 403) and needs_auth(req):
            self.track.trusted = True
        return response

    def response_headers(self, req: Request, response: Response) -> list[tuple[bytes, bytes]]:
        state = self.server.state
        headers = [(b"content-length", b"%d" % len(response.body))]
        if response.content_type is not None:
            headers.append((b"content-type", response.content_type))
        headers += response.headers
        headers += state.cors.response_headers(req, state.extension_id)
        return headers

    # --- the fast path -----------------------------------------------------------------

    async def serve_fast(self, req: Request, length: int, close_requested: bool) -> bool:
        """Serve one plain request; True if the connection may carry another."""
        self.body_left = length
        response = await self.respond(req, self.read_fast_body)
        close = close_requested or self.server.stopping
        if self.body_left:
            if len(self.buf) >= self.body_left:  # unread but already here: skip it
                self.buf = self.buf[self.body_left :]
                self.body_left = 0
            else:
                close = True  # never wait for the body of a request we answered
        headers = self.response_headers(req, response)
        if close:
            headers.append((b"connection", b"close"))
        body = b"" if req.method == "HEAD" else response.body
        await self.send_all(encode_head(response.status, headers), body)
        if self.body_to_reuse is not None:
            self.spare_body, self.body_to_reuse = self.body_to_reuse, None
        if response.after_send is not None:
            response.after_send()
        if close:
            await self.linger()
            return False
        return True

    async def read_fast_body(self, limit: int) -> bytes:
        length = self.body_left
        if length > limit:
            raise PayloadTooLarge(TOO_LARGE)  # refused before reading a byte
        buf = self.buf
        if len(buf) >= length:
            self.buf = buf[length:]
            self.body_left = 0
            return buf[:length]
        # Received in place: a 1 MiB body is never copied between buffers. The buffer of
        # the previous body of the same size is reused (handlers never keep a body past
        # their response): a fresh 1 MiB buffer costs a zero-fill and, when the allocator
        # has returned its pages, a page fault per 4 KiB.
        body = self.spare_body
        if body is None or len(body) != length:
            body = bytearray(length)
        self.spare_body = None
        view = memoryview(body)
        have = len(buf)
        view[:have] = buf
        self.buf = b""
        sock = self.sock
        while have < length:
            try:
                got = sock.recv_into(view[have:])
            except BlockingIOError:
                await self.wait_readable_for(STALL_SECONDS)
                continue
            except OSError as exc:
                raise ClientGone from exc
            if not got:
                raise ClientGone
            have += got
            self.body_left = length - have
        self.body_left = 0
        self.body_to_reuse = body if length <= MAX_SPARE_BODY else None
        return body  # type: ignore[return-value]  # bytes-like; handlers only read it

    async def linger(self) -> None:
        """Shut our side, discard what the client still sends for a moment, then close."""
        sock = self.sock
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return
        with trio.move_on_after(LINGER_SECONDS):
            drained = 0
            while drained < LINGER_BYTES:
                await trio.lowlevel.wait_readable(sock)
                try:
                    data = sock.recv(RECEIVE_SIZE)
                except BlockingIOError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                drained += len(data)

    async def send_error(self, status: int, message: bytes) -> None:
        """A plain-text error after which this connection is closed."""
        headers = [
            (b"content-length", b"%d" % len(message)),
            (b"content-type", TEXT_PLAIN),
            (b"connection", b"close"),
        ]
        with trio.move_on_after(1.0), contextlib.suppress(ClientGone):
            await self.send_all(encode_head(status, headers), message)

    # --- h11, for every request the fast path does not recognise ------------------------

    async def serve_with_h11(self, head: bytes) -> bool:
        if not _h11_loaded:
            _load_h11()  # every other use of h11 in this module is reached from here
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_SIZE)
        conn.receive_data(head + self.buf)
        self.buf = b""
        self.conn = conn
        try:
            event = await self._event()
            if not isinstance(event, h11.Request):
                return False
            req = request_from(event)
            if is_io_upgrade(req) or is_control_upgrade(req):
                await self.upgrade(req)
                return False
            if is_stream_request(req):
                if not await self.serve_stream(conn, req):
                    return False
            elif not await self.serve_h11_request(req):
                return False
        except h11.RemoteProtocolError as exc:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                await self.send_error(exc.error_status_hint, str(exc).encode("utf-8", "replace"))
            return False
        finally:
            self.conn = None
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            trailing, closed = conn.trailing_data
            self.buf = bytes(trailing)
            return not closed
        return False

    async def _event(self) -> h11.Event:
        conn = self.conn
        assert conn is not None
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event  # type: ignore[return-value]
            conn.receive_data(await self.receive(STALL_SECONDS))

    def _buffered_events_skip_body(self) -> bool:
        """Skip body data already received; True when the whole body was there."""
        conn = self.conn
        assert conn is not None
        while conn.their_state is h11.SEND_BODY:
            event = conn.next_event()
            if event is h11.NEED_DATA or not isinstance(event, h11.Data | h11.EndOfMessage):
                return False
        return True

    async def serve_h11_request(self, req: Request) -> bool:
        conn = self.conn
        assert conn is not None
        response = await self.respond(req, self.h11_body_reader(req))
        headers = self.response_headers(req, response)
        close = self.server.stopping
        if conn.their_state is h11.SEND_BODY and not self._buffered_events_skip_body():
            close = True  # never wait for the body of a request we answered
        if close:
            headers.append((b"connection", b"close"))
        data = conn.send(
            h11.Response(
                status_code=response.status,
                headers=headers,
                reason=REASONS.get(response.status, b""),
            )
        )
        body = b"" if req.method == "HEAD" else response.body
        if body:
            data += conn.send(h11.Data(data=body))
        data += conn.send(h11.EndOfMessage())
        await self.send_all(data)
        if response.after_send is not None:
            response.after_send()
        if close:
            if conn.their_state is h11.SEND_BODY:
                await self.linger()
            return False
        return conn.our_state is not h11.MUST_CLOSE

    async def serve_stream(self, conn: h11.Connection, req: Request) -> bool:
        """``GET``/``HEAD /stream/<token>`` (STREAMING.md): the URL is the capability, so
        no daemon token; the Host check still applies. False: close the connection."""
        if not host_allowed(req.header(b"host"), self.server.port):
            await self.send_error(403, b"Invalid Host header")
            return False
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(self.sock))
        serve = _stream_serve or _load_stream_serve()
        if not await serve(self.server.state, conn, stream, req):
            return False
        # A GET has no body, but h11 reaches DONE only once it has seen its end.
        return self._buffered_events_skip_body()

    def h11_body_reader(self, req: Request) -> Callable[[int], Awaitable[bytes]]:
        async def read_body(limit: int) -> bytes:
            declared = req.header(b"content-length")
            if declared is not None:
                size = parse_u64(declared)
                if size is not None and size > limit:
                    raise PayloadTooLarge(TOO_LARGE)  # refused before reading a byte
            conn = self.conn
            assert conn is not None
            if conn.they_are_waiting_for_100_continue:
                await self.send_all(
                    conn.send(
                        h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
                    )
                )
            chunks: list[bytes] = []
            total = 0
            while True:
                event = await self._event()
                if isinstance(event, h11.Data):
                    total += len(event.data)
                    if total > limit:
                        raise PayloadTooLarge(TOO_LARGE)
                    chunks.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:
                    raise ClientGone
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)

        return read_body

    async def upgrade(self, req: Request) -> None:
        """Answer the WebSocket handshake with the exact status line (§6.1), run /io."""
        # Imported by the first session, not at start (issue 17); once per session.
        from wsproto.utilities import generate_accept_token

        from jst.daemon import control_ws, mux
        from jst.daemon.websocket import WebSocket

        if not host_allowed(req.header(b"host"), self.server.port):
            await self.send_error(403, b"Invalid Host header")
            return
        key = req.header(b"sec-websocket-key")
        if key is None or req.header(b"sec-websocket-version") != b"13":
            await self.send_error(400, b"Bad WebSocket handshake")
            return
        conn = self.conn
        assert conn is not None
        data = conn.send(
            h11.InformationalResponse(
                status_code=101,
                headers=[
                    (b"upgrade", b"websocket"),
                    (b"connection", b"Upgrade"),
                    (b"sec-websocket-accept", generate_accept_token(key)),
                ],
                reason=b"Switching Protocols",
            )
        )
        await self.send_all(data)
        trailing, _closed = conn.trailing_data
        # Until AUTH succeeds the session is an anonymous waiting connection like any
        # other: droppable, and dropped after HEAD_SECONDS (its SERVER_HELLO, or a pong,
        # does not end the wait: mux.authenticate calls ``on_authenticated``).
        server, track = self.server, self.track
        track.deadline = trio.current_time() + HEAD_SECONDS
        server.begin_wait(track)
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(self.sock))
        ws = WebSocket(stream, bytes(trailing), self.server.max_ws_message)
        ws.on_authenticated = lambda: server.end_wait(track)
        with trio.CancelScope() as scope:
            self.track.websocket = scope
            if self.server.stopping:
                scope.cancel()
            if req.raw_path == b"/control":  # service mode only (control_ws.py)
                await control_ws.serve_session(ws, self.server.state)
            else:
                await mux.serve_session(ws, self.server.state)


def send_buffers(sock: socket.socket, buffers: list[bytes | memoryview]) -> int:
    """One non-blocking gathered write; Windows has no ``sendmsg``, so it joins."""
    if _HAS_SENDMSG:
        return sock.sendmsg(buffers)
    return sock.send(b"".join(buffers))


_HAS_SENDMSG = hasattr(socket.socket, "sendmsg")


def request_from(event: h11.Request) -> Request:
    raw_path, _, query = bytes(event.target).partition(b"?")
    return Request(
        method=event.method.decode("ascii", "replace"),
        raw_path=raw_path,
        query=query,
        headers=tuple((bytes(name), bytes(value)) for name, value in event.headers),
    )


def is_control_upgrade(req: Request) -> bool:
    """``GET /control`` upgrade in service mode. Service mode is switched on by
    ``control_ws.enable``, so while that module is not even loaded this is False."""
    control_ws = sys.modules.get("jst.daemon.control_ws")
    return control_ws is not None and bool(control_ws.is_control_upgrade(req))


# h11 (~10 ms to import) serves only what the fast path does not: upgrades, /stream,
# unusual heads. Loaded by the first such request instead of at start (issue 17).
_h11_loaded = False


def _load_h11() -> None:
    global h11, _h11_loaded
    import h11

    _h11_loaded = True


# /stream's server (streamhttp.py, with streams.py and the stream wire format): loaded by
# the first /stream request instead of at start (issue 17), then one global lookup.
_stream_serve: (
    Callable[[DaemonState, h11.Connection, trio.SocketStream, Request], Awaitable[bool]] | None
) = None


def _load_stream_serve() -> Callable[
    [DaemonState, h11.Connection, trio.SocketStream, Request], Awaitable[bool]
]:
    global _stream_serve
    from jst.daemon.streamhttp import serve

    _stream_serve = serve
    return serve


def is_io_upgrade(req: Request) -> bool:
    upgrade = req.header(b"upgrade")
    return (
        req.method == "GET"
        and req.raw_path == b"/io"
        and upgrade is not None
        and upgrade.lower() == b"websocket"
    )


def error_response(exc: HttpError) -> Response:
    if exc.message is None:
        response = Response(exc.status)
    else:
        response = Response(exc.status, exc.message.encode("utf-8"), TEXT_PLAIN)
    if isinstance(exc, MethodNotAllowed):
        response.headers.append(allow_header(exc.allowed))
    return response
