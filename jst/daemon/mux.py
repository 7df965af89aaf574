"""The ``/io`` socket multiplexer: one session per WebSocket (PROTOCOL.md §6).

The nursery tree of one session (``serve_session``)::

    the HTTP connection's task (server.py), after the 101
    └── serve_session ...................... handshake + auth inline, 10 s at most
        └── session nursery ................ cancelled when the WebSocket closes
            ├── (body) read_loop ........... reads messages in order, dispatches requests,
            │                                writes TCP_SEND data (no task switch)
            ├── write_loop ................. sends what is queued on the WebSocket
            ├── reactor .................... reads every plain TCP socket (iotcp, iopoll)
            ├── connect_task(id) ........... per TCP_CONNECT, until TCP_CONNECTED
            ├── tls_task(id) ............... per TCP_SECURE: handshake, reader + writer (iotcptls)
            ├── closing_task(id) ........... per client TCP_CLOSE: flush, FIN, linger (iotcpclose)
            ├── tcp_listener(id) ........... per TCP_LISTEN: bind, accept loop (iobound)
            ├── udp_socket(id) ............. per UDP_BIND: bind, receive loop (iobound)
            └── udp_send_resolved .......... a UDP_SEND to a host name (resolution is slow)

The modules, along the protocol's seams: ``wire`` (frames, sans-I/O), ``websocket`` and
``wsframes`` (RFC 6455), ``ioqueue`` (the outbound queue), ``iopoll`` (the readiness set),
``iotcp`` (TCP sockets, §6.5; the TLS path and the graceful close in ``iotcptls`` and
``iotcpclose``, §6.6, §6.5), ``iobound`` (listeners and UDP, §6.7–§6.9), and this
one: authentication (§6.4), the dispatch table, and the session's lifetime.

What may cancel what: the WebSocket closing ends ``read_loop``, whose ``finally`` cancels
the session nursery; tasks close their own sockets as they unwind, then ``close_all``
closes the sockets no task owned, so a dropped WebSocket leaves no socket behind
whatever state each one was in (§6.11, §9.8). Teardown is one cancellation plus one
``close()`` per socket. A client TCP_CLOSE / TCP_STOP_LISTEN / UDP_CLOSE closes that one
socket. Nothing else cancels anything.

Flow control (§6.11, §9.9):

* Outbound: all frames of the session go through one queue bounded in bytes
  (``ioqueue.Outbox``) drained by ``write_loop``. When the WebSocket is slow the queue
  fills, the reactor stops reading sockets, and TCP flow control pushes back on the
  peers. Frames of one socket are produced by one owner at a time, never reordered.
  One shortcut: when the writer is idle (nothing in flight) and a producer has queued
  a few small frames, ``Outbox.send_now`` writes them itself without blocking, and
  queues what the socket did not take, already framed, ahead of anything later; the
  reply skips a round of the scheduler (echo round trip about a fifth shorter).
* Inbound: TCP_SEND data is queued on its socket and written when the messages already
  received have been dispatched; a slow peer only fills its own buffer; the session
  stalls only when one socket holds more than ``SOCKET_BUFFER_CAP`` unsent bytes (the
  §9.9 fallback: never drop, never reorder).

Before AUTH (issue 12): messages over ``PRE_AUTH_MAX_MESSAGE`` close the connection
with 1009 (nothing of them is buffered), and a session not authenticated within
``AUTH_TIMEOUT`` seconds is closed, so a client without the token costs a few KiB.

The §9 fixes made here and in the socket modules: pending sockets report a remote close
(§9.4, by peeking), TLS writes are complete (§9.5), accepted sockets get ids from
``FIRST_ACCEPT_ID`` up that skip ids in use (§9.7), remote-closed and client-closed
sockets leave the tables at once and a reused id closes the socket it replaces (§9.8),
per-socket buffers (§9.9), ``accept()`` errors back off and retry (§9.10), failure frames
are flushed before the close (§9.24), UDP connection resets are ignored (§9.23).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from jst.daemon import gctune, iopoll, streams, streamwire, wire
from jst.daemon.iobound import BoundSockets
from jst.daemon.ioqueue import Framed, Outbox, SessionIO
from jst.daemon.iotcp import TcpSockets
from jst.daemon.state import DaemonState
from jst.daemon.websocket import CLOSE_WAIT_SECONDS, WebSocket

log = logging.getLogger("jst.daemon.io")

# write_loop stops adding queued frames to one WebSocket write at this many bytes. Each
# write costs a round of the loop and a sendmsg wrapper besides the copy: measured with
# the shared instrument (16 sockets downloading), 1 MiB moved about 1.25x the bytes of
# 256 KiB per CPU second; 512 KiB and 4 MiB did worse than 1 MiB. Small frames never
# wait for a batch to fill: a write takes whatever is queued when the writer wakes.
WS_WRITE_BATCH = 1024 * 1024
# TCP_SEND payloads up to this size are copied out of their message, larger ones viewed.
SLICE_LIMIT = 64 * 1024
# Before AUTH the handshake messages are tens of bytes; 64 KiB leaves room for any token.
PRE_AUTH_MAX_MESSAGE = 64 * 1024
# A client that has the token authenticates in milliseconds.
AUTH_TIMEOUT = 10.0
CLOSE_POLICY_VIOLATION = 1008  # auth failures, auth timeout
CLOSE_PROTOCOL_ERROR = 1002  # wrong envelope version

_TCP_SEND = int(wire.Op.TCP_SEND)

# A handler gets the whole frame; the table below maps every client opcode to one.
Handler = Callable[[wire.Frame], Awaitable[None]]


class Session:
    """The AUTHENTICATED state of one WebSocket: socket tables and the dispatch table."""

    def __init__(self, io: SessionIO, poller: iopoll.Poller) -> None:
        self.io = io
        self.outbox = io.outbox
        self.tcp = TcpSockets(io, poller)
        self.bound = BoundSockets(io, self.tcp)
        self.closing = False
        self.streams: streams.SessionStreams | None = None  # 0x40-0x44 (streams.py)
        tcp, bound, op = self.tcp, self.bound, wire.Op

        async def connect(r: wire.TcpConnect, rid: int) -> None:
            tcp.connect(r, rid)

        async def send(r: wire.TcpSend, _rid: int) -> None:
            await tcp.send(r.socket_id, r.data)

        async def close(r: wire.TcpClose, _rid: int) -> None:
            tcp.close(r.socket_id)

        async def secure(r: wire.TcpSecure, rid: int) -> None:
            if not tcp.secure(r, rid):  # refused at once (§6.6)
                await self.outbox.put(wire.encode_tcp_secured(rid, r.socket_id, False))

        async def listen(r: wire.TcpListen, rid: int) -> None:
            bound.listen(r, rid)

        async def stop_listening(r: wire.TcpStopListen, _rid: int) -> None:
            bound.stop_listening(r.server_id)

        async def udp_bind(r: wire.UdpBind, rid: int) -> None:
            bound.udp_bind(r, rid)

        async def udp_send(r: wire.UdpSend, _rid: int) -> None:
            await bound.udp_send(r)

        async def udp_close(r: wire.UdpClose, _rid: int) -> None:
            bound.udp_close(r.socket_id)

        async def udp_multicast(r: wire.UdpMulticast, _rid: int) -> None:
            bound.udp_multicast(r)

        # The single dispatch table: opcode -> handler of the whole frame. A new opcode
        # is one entry here (its handler parses its own payload).
        self.handlers: dict[int, Handler] = {
            op.TCP_CONNECT: parsed(connect),
            op.TCP_SEND: parsed(send),
            op.TCP_CLOSE: parsed(close),
            op.TCP_SECURE: parsed(secure),
            op.TCP_LISTEN: parsed(listen),
            op.TCP_STOP_LISTEN: parsed(stop_listening),
            op.UDP_BIND: parsed(udp_bind),
            op.UDP_SEND: parsed(udp_send),
            op.UDP_CLOSE: parsed(udp_close),
            op.UDP_JOIN_MULTICAST: parsed(udp_multicast),
            op.UDP_LEAVE_MULTICAST: parsed(udp_multicast),
        }

        async def stream_frame(frame: wire.Frame) -> None:
            if self.streams is not None:
                await self.streams.receive(frame)  # STREAMING.md §1: its own codec

        for stream_op in streamwire.STREAM_OPCODES:
            self.handlers[stream_op] = stream_frame

    async def read_loop(self, ws: WebSocket) -> None:
        tcp = self.tcp
        while True:
            if tcp.dirty and not ws.has_buffered_messages:
                tcp.flush_dirty()  # all that arrived is dispatched: write it, joined
            data = await ws.receive()
            if data is None:
                return  # the WebSocket is closed
            if isinstance(data, str) or self.closing:
                continue  # text messages are ignored (§6.1)
            # The hot path, TCP_SEND, skips the generic parser.
            if len(data) >= 12 and data[1] == _TCP_SEND and data[0] == wire.VERSION:
                # Small payloads are sliced (bytes are not tracked by the garbage collector:
                # ten thousand queued views made it run mid-burst); large ones are viewed,
                # not copied.
                size = len(data)
                payload = data[12:] if size <= SLICE_LIMIT else memoryview(data)[12:]
                await tcp.send(int.from_bytes(data[8:12], "little"), payload)
                continue
            frame = wire.parse_frame(data)
            if frame is None:
                continue
            if frame.version != wire.VERSION:
                await self.outbox.put(wire.encode_error(frame.request_id, wire.INVALID_VERSION))
                await self.outbox.put(CLOSE_PROTOCOL_ERROR)
                self.closing = True
                continue
            handler = self.handlers.get(frame.opcode)
            if handler is None:
                await self.outbox.put(wire.encode_error(frame.request_id, wire.UNKNOWN_OPCODE))
                continue
            await handler(frame)

    async def close_all(self) -> None:
        """Close every socket no task owns any more (after the nursery has ended)."""
        self.bound.close_all()
        await self.tcp.close_all()
        self.tcp.poller.close()


def parsed(handle: Callable[[Any, int], Awaitable[None]]) -> Handler:
    """A frame handler from a handler of the parsed request (malformed ones ignored, §6.10)."""

    async def handler(frame: wire.Frame) -> None:
        request = wire.parse_request(frame)
        if request is not None:
            await handle(request, frame.request_id)

    return handler


async def write_loop(outbox: Outbox, ws: WebSocket, session_scope: trio.CancelScope) -> None:
    """Sends what is queued on the WebSocket (``Outbox.send_now`` writes only while this
    waits with nothing queued); an int in the queue means "close".

    Whatever is queued when the writer wakes goes out in one write (coalescing): 200
    echo replies produced in one scheduling round cost one system call, not 200.
    """
    while True:
        batch: list[bytes] = []
        for item in await outbox.take(WS_WRITE_BATCH):
            if isinstance(item, int):
                await ws.send_many(batch)
                await ws.close_soon(item)
                # The read loop ends the session when the client answers the Close.
                await trio.sleep(CLOSE_WAIT_SECONDS)
                session_scope.cancel()
                return
            if isinstance(item, Framed):  # the rest of a send_now, before what follows
                await ws.send_many(batch)
                batch = []
                await ws.send_framed(item)
                continue
            batch.append(item)
        await ws.send_many(batch)


async def authenticate(ws: WebSocket, token: bytes) -> bool:
    """§6.4, inline: before success no socket exists, so there is nothing to multiplex.

    A failure frame is sent before the Close frame on the same connection (§9.24).
    """
    gate = wire.Authenticator(token)
    while True:
        data = await ws.receive()
        if data is None:
            return False
        if isinstance(data, str):
            continue
        frame = wire.parse_frame(data)
        if frame is None:
            continue
        step = gate.receive(frame)
        if step.reply is not None:
            await ws.send_many([step.reply])
        if step.close:
            code = CLOSE_PROTOCOL_ERROR if frame.version != wire.VERSION else CLOSE_POLICY_VIOLATION
            await ws.close(code)
            return False
        if step.authenticated:
            if ws.on_authenticated is not None:
                ws.on_authenticated()
            return True


async def authenticate_within_bounds(ws: WebSocket, token: bytes) -> bool:
    """``authenticate`` under the pre-AUTH bounds (issue 12; ``/io`` and ``/control``):
    messages of at most ``PRE_AUTH_MAX_MESSAGE`` and ``AUTH_TIMEOUT`` to succeed, after
    which the client is told why (1008) and the connection closed. On success the
    WebSocket's own message limit applies again (§6.1: 64 MiB)."""
    max_message = ws.max_message
    ws.max_message = min(max_message, PRE_AUTH_MAX_MESSAGE)
    authenticated = False
    with trio.move_on_after(AUTH_TIMEOUT):
        authenticated = await authenticate(ws, token)
    if not authenticated:
        if not ws.closed:  # the timeout: tell the client why, briefly
            with trio.move_on_after(CLOSE_WAIT_SECONDS):
                await ws.close(CLOSE_POLICY_VIOLATION)
        return False
    ws.max_message = max_message
    return True


async def serve_session(ws: WebSocket, state: DaemonState) -> None:
    """One ``/io`` WebSocket from the ``101`` to its close."""
    gctune.freeze_late_imports()
    stats = state.stats
    stats.ws_connections += 1
    try:
        if not await authenticate_within_bounds(ws, state.token):
            return
        outbox = Outbox()
        outbox.direct = ws.send_now  # small replies skip the writer's wake-up (ioqueue)
        session: Session | None = None
        try:
            async with trio.open_nursery() as nursery:
                io = SessionIO(stats, nursery, outbox)
                session = Session(io, iopoll.open_poller(nursery))
                session.streams = streams.SessionStreams(state, outbox)
                nursery.start_soon(write_loop, outbox, ws, nursery.cancel_scope)
                nursery.start_soon(session.tcp.reactor)
                try:
                    await session.read_loop(ws)
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            if session is not None:
                # Shielded: this runs when the connection was cancelled too (shutdown).
                with trio.CancelScope(shield=True):
                    await session.close_all()
                if session.streams is not None:
                    session.streams.close_all()  # the session's streams die with it
    finally:
        stats.ws_connections -= 1
