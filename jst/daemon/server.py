"""The daemon's HTTP/1.1 server: h11 over trio streams, with the ``/io`` upgrade.

Design notes
------------
Protocol logic lives elsewhere: ``http.py`` (request rules), ``routes.py`` (handlers),
``mux.py`` (the ``/io`` protocol), ``websocket.py`` (frames). This module is only the
loop that moves bytes between a socket and those modules: one task per connection,
requests served in order on a keep-alive connection, and ``GET /io`` with
``Upgrade: websocket`` handed to the multiplexer after the ``101``.

Why not hypercorn (which served the daemon until 0.2): the ``/io`` contract needs
several WebSocket frames per socket write, and ASGI has no way to say that (each
``websocket.send`` is one write); with hypercorn the 200-socket echo load reached 7,100
msg/s and its per-request overhead capped 16 KiB writes at 2,800 req/s on this project's
2-core reference machine. It also sent status lines without a reason phrase, which
clients of the original check for (``HTTP/1.1 101 Switching Protocols``, §6.1). h11 and
wsproto, the sans-I/O cores hypercorn itself uses, do the parsing here.

Shutdown (``serve``): the listener closes first, so nothing new is accepted; connections
waiting for their next request are closed at once; a request in progress gets
``grace_seconds`` to finish; WebSocket sessions are ended. Then everything left is
cancelled.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
from collections.abc import Awaitable, Callable
from http import HTTPStatus

import attrs
import h11
import trio
from wsproto.utilities import generate_accept_token

from jst.daemon import control_ws, mux, streamhttp, streams
from jst.daemon.errors import HttpError, MethodNotAllowed, PayloadTooLarge
from jst.daemon.http import TEXT_PLAIN, Request, Response, allow_header, parse_u64
from jst.daemon.routes import Context, dispatch
from jst.daemon.state import DaemonState
from jst.daemon.websocket import STREAM_ERRORS, WebSocket

log = logging.getLogger("jst.daemon.http")

REASONS = {status.value: status.phrase.encode("ascii") for status in HTTPStatus}
TOO_LARGE = "Failed to buffer the request body: length limit exceeded"
RECEIVE_SIZE = 256 * 1024
# A request head larger than this is refused (431); the engine's are a few hundred bytes.
MAX_HEAD_SIZE = 64 * 1024
# After a response, body bytes the handler did not read are skipped up to this much to
# keep the connection; beyond it the connection is closed instead.
MAX_DRAIN = 1024 * 1024


class ClientGone(Exception):
    """The client closed or broke the connection in the middle of a request."""


@attrs.define(eq=False)
class ConnectionState:
    idle_scope: trio.CancelScope | None = None  # set while waiting for the next request
    websocket: trio.CancelScope | None = None  # set while serving an /io session


@attrs.define
class Server:
    state: DaemonState
    request_shutdown: Callable[[], None]
    keep_alive_seconds: float
    max_ws_message: int
    stopping: bool = False
    connections: set[ConnectionState] = attrs.field(factory=set)
    drained: trio.Event = attrs.field(factory=trio.Event)  # stopping and no connection left

    async def handle(self, stream: trio.SocketStream) -> None:
        track = ConnectionState()
        self.connections.add(track)
        try:
            await HttpConnection(self, stream, track).run()
        except Exception:
            log.exception("unexpected error on an HTTP connection")
        finally:
            self.connections.discard(track)
            await trio.aclose_forcefully(stream)
            if self.stopping and not self.connections:
                self.drained.set()

    async def wait_drained(self) -> None:
        if self.connections:
            await self.drained.wait()

    def stop_idle(self) -> None:
        self.stopping = True
        for track in self.connections:
            if track.idle_scope is not None:
                track.idle_scope.cancel()
            if track.websocket is not None:
                track.websocket.cancel()


class HttpConnection:
    def __init__(self, server: Server, stream: trio.SocketStream, track: ConnectionState):
        self.server = server
        self.stream = stream
        self.track = track
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_SIZE)

    async def _event(self) -> h11.Event:
        conn = self.conn
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event  # type: ignore[return-value]
            try:
                data = await self.stream.receive_some(RECEIVE_SIZE)
            except STREAM_ERRORS as exc:
                raise ClientGone from exc
            conn.receive_data(bytes(data))

    async def run(self) -> None:
        conn = self.conn
        while not self.server.stopping:
            try:
                with trio.move_on_after(self.server.keep_alive_seconds) as idle:
                    self.track.idle_scope = idle
                    event = await self._event()
                self.track.idle_scope = None
                if idle.cancelled_caught:
                    return  # idle keep-alive connection, or shutting down
                if not isinstance(event, h11.Request):
                    return  # ConnectionClosed, or nothing usable
                req = request_from(event)
                if is_io_upgrade(req) or control_ws.is_control_upgrade(req):
                    await self.upgrade(req)
                    return
                if not streamhttp.is_stream_request(req):
                    await self.serve_request(req)
                elif not await streamhttp.serve(self.server.state, self.conn, self.stream, req):
                    return  # /stream (streamhttp.py): a body cut short closes the connection
            except h11.RemoteProtocolError as exc:
                await self.protocol_error(exc)
                return
            except ClientGone:
                return
            if conn.our_state is h11.MUST_CLOSE or not await self.finish_cycle():
                return

    async def finish_cycle(self) -> bool:
        """Skip an unread request body (bounded); True if the connection can be reused."""
        conn = self.conn
        drained = 0
        while conn.their_state is h11.SEND_BODY:
            event = await self._event()
            if isinstance(event, h11.Data):
                drained += len(event.data)
                if drained > MAX_DRAIN:
                    return False
            elif not isinstance(event, h11.EndOfMessage):
                return False
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
            return True
        return False

    async def serve_request(self, req: Request) -> None:
        state = self.server.state
        ctx = Context(state, self.body_reader(req), self.server.request_shutdown)
        try:
            response = await dispatch(req, ctx)
        except HttpError as exc:
            response = error_response(exc)
        except ClientGone:
            raise
        except Exception:
            log.exception("unexpected error in %s %r", req.method, req.raw_path)
            response = Response(500)
        headers = [(b"content-length", str(len(response.body)).encode())]
        if response.content_type is not None:
            headers.append((b"content-type", response.content_type))
        headers.extend(response.headers)
        headers.extend(state.cors.response_headers(req, state.extension_id))
        if self.server.stopping:
            headers.append((b"connection", b"close"))
        body = b"" if req.method == "HEAD" else response.body
        data = self.encode_response(response.status, headers, body)
        await self.send(data)
        if response.after_send is not None:
            response.after_send()

    def body_reader(self, req: Request) -> Callable[[int], Awaitable[bytes]]:
        async def read_body(limit: int) -> bytes:
            declared = req.header(b"content-length")
            if declared is not None:
                size = parse_u64(declared)
                if size is not None and size > limit:
                    raise PayloadTooLarge(TOO_LARGE)  # refused before reading a byte
            conn = self.conn
            if conn.they_are_waiting_for_100_continue:
                await self.send(
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

    async def send(self, data: bytes) -> None:
        try:
            await self.stream.send_all(data)
        except STREAM_ERRORS as exc:
            raise ClientGone from exc

    async def protocol_error(self, exc: h11.RemoteProtocolError) -> None:
        """Answer a malformed request (400, or 431 for a huge head), then close."""
        conn = self.conn
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        try:
            data = self.closing_response(exc.error_status_hint, str(exc).encode("utf-8", "replace"))
        except h11.LocalProtocolError:
            return
        with trio.move_on_after(1.0):
            with contextlib.suppress(ClientGone):
                await self.send(data)

    async def upgrade(self, req: Request) -> None:
        """Answer the WebSocket handshake with the exact status line (§6.1), run /io."""
        key = req.header(b"sec-websocket-key")
        if key is None or req.header(b"sec-websocket-version") != b"13":
            await self.send(self.closing_response(400, b"Bad WebSocket handshake"))
            return
        conn = self.conn
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
        await self.send(data)
        trailing, _closed = conn.trailing_data
        ws = WebSocket(self.stream, bytes(trailing), self.server.max_ws_message)
        with trio.CancelScope() as scope:
            self.track.websocket = scope
            if self.server.stopping:
                scope.cancel()
            if req.raw_path == b"/control":  # service mode only (control_ws.py)
                await control_ws.serve_session(ws, self.server.state)
            else:
                await mux.serve_session(ws, self.server.state)

    def encode_response(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> bytes:
        """A whole response as bytes, written with one ``send_all`` by the caller."""
        conn = self.conn
        data = conn.send(
            h11.Response(status_code=status, headers=headers, reason=REASONS.get(status, b""))
        )
        if body:
            data += conn.send(h11.Data(data=body))
        return data + conn.send(h11.EndOfMessage())

    def closing_response(self, status: int, body: bytes) -> bytes:
        """A plain-text error after which this connection is closed."""
        headers = [
            (b"content-length", str(len(body)).encode()),
            (b"content-type", TEXT_PLAIN),
            (b"connection", b"close"),
        ]
        return self.encode_response(status, headers, body)


def request_from(event: h11.Request) -> Request:
    raw_path, _, query = bytes(event.target).partition(b"?")
    return Request(
        method=event.method.decode("ascii", "replace"),
        raw_path=raw_path,
        query=query,
        headers=tuple((bytes(name), bytes(value)) for name, value in event.headers),
    )


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


async def serve(
    server: Server,
    listen_fd: int,
    shutdown: trio.Event,
    grace_seconds: float,
) -> None:
    """Accept and serve connections until ``shutdown`` is set, then stop as described above."""
    sock = trio.socket.from_stdlib_socket(socket.socket(fileno=listen_fd))
    streams.hub(server.state).port = sock.getsockname()[1]  # for /stream URLs (streams.py)
    listener = trio.SocketListener(sock)
    async with trio.open_nursery() as connections:
        async with trio.open_nursery() as accepting:
            # serve_listeners retries accept() errors such as EMFILE after a pause.
            accepting.start_soon(
                functools.partial(
                    trio.serve_listeners, server.handle, [listener], handler_nursery=connections
                )
            )
            await shutdown.wait()
            accepting.cancel_scope.cancel()
        await listener.aclose()
        server.stop_idle()
        with trio.move_on_after(grace_seconds):
            await server.wait_drained()
        connections.cancel_scope.cancel()
