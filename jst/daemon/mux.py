"""The ``/io`` socket multiplexer: one session per WebSocket (PROTOCOL.md §6).

The nursery tree of one session (``serve_session``)::

    the HTTP connection's task (server.py), after the 101
    └── serve_session ...................... handshake + auth inline (no socket exists yet)
        └── session nursery ................ cancelled when the WebSocket closes
            ├── (body) read_loop ........... reads messages in order, dispatches requests
            ├── write_loop ................. the only task that sends on the WebSocket
            ├── tcp_client(id) ............. per TCP_CONNECT: connect, pending, TLS, active
            │   └── active nursery ......... socket_reader + socket_writer
            ├── tcp_accepted(id) ........... per accepted connection: active nursery
            ├── tcp_listener(id) ........... per TCP_LISTEN: bind, accept loop (back-off)
            ├── udp_socket(id) ............. per UDP_BIND: bind, receive loop
            └── udp_send_resolved .......... a UDP_SEND to a host name (resolution is slow)

What may cancel what: the WebSocket closing ends ``read_loop``, whose ``finally`` cancels
the session nursery; every task closes its own socket in a ``finally`` with a plain
(synchronous) ``close()``, so a dropped WebSocket leaves no socket behind whatever state
each one was in (§6.11, §9.8). A client TCP_CLOSE / TCP_STOP_LISTEN / UDP_CLOSE cancels
that one socket's scope. Nothing else cancels anything.

Flow control (§6.11, §9.9):

* Outbound: all frames of the session go through one bounded FIFO (``OUTBOUND_QUEUE``)
  drained by ``write_loop``. When the WebSocket is slow the queue fills, socket readers
  block on it, and TCP flow control pushes back on the peers; memory stays bounded by
  ``OUTBOUND_QUEUE * READ_SIZE``. Frames of one socket are produced by one task, so they
  are never reordered.
* Inbound: TCP_SEND data is appended to the socket's own buffer and written by that
  socket's writer task, which joins whatever has accumulated into one ``send_all``. A slow
  peer therefore only fills its own buffer; the session stalls only when one socket holds
  more than ``SOCKET_BUFFER_CAP`` unsent bytes (the §9.9 fallback: never drop, never
  reorder).

Batching, because Python pays per message rather than per byte: ``write_loop`` sends
every frame queued when it wakes in one write; a TCP read takes up to ``READ_SIZE``
bytes into one TCP_RECV frame; a socket's writer joins all queued TCP_SEND data into
one ``send_all``.

The §9 fixes made here: pending sockets report a remote close (§9.4, by peeking), TLS
writes are complete (§9.5, ``SSLStream.send_all``), accepted sockets get ids from
``FIRST_ACCEPT_ID`` up that skip ids in use (§9.7), remote-closed and client-closed
sockets leave the tables at once and a reused id closes the socket it replaces (§9.8),
per-socket buffers (§9.9), ``accept()`` errors back off and retry (§9.10), failure frames
are flushed before the close (§9.24), UDP connection resets are ignored (§9.23).
"""

from __future__ import annotations

import collections
import contextlib
import enum
import errno
import functools
import ipaddress
import logging
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from jst.daemon import netif, streams, streamwire, wire
from jst.daemon.state import DaemonState, Stats
from jst.daemon.websocket import CLOSE_WAIT_SECONDS, STREAM_ERRORS, WebSocket

log = logging.getLogger("jst.daemon.io")

# Python pays per message, not per byte: one large read becomes one TCP_RECV frame.
# Measured with `make bench` (1 socket, download): 16 KiB reads reach about a third of
# what 128 KiB reads do; 256 KiB adds nothing more and doubles the worst-case queue memory.
READ_SIZE = 128 * 1024
# Frames waiting for the WebSocket writer. With READ_SIZE frames this bounds a session's
# queued download data to 8 MiB; small frames (echo traffic) never come close.
OUTBOUND_QUEUE = 64
# write_loop stops adding queued frames to one WebSocket write at this many bytes.
WS_WRITE_BATCH = 256 * 1024
# Unsent TCP_SEND bytes one socket may hold before the session waits for it (§9.9).
SOCKET_BUFFER_CAP = 16 * 1024 * 1024
# A socket writer joins queued TCP_SEND chunks into writes of up to this size.
WRITE_JOIN_LIMIT = 256 * 1024
CONNECT_TIMEOUT = 30.0  # §6.5
TLS_HANDSHAKE_TIMEOUT = 30.0  # §6.6
# After a client TCP_CLOSE, how long unsent data may take to reach a slow peer.
CLOSE_FLUSH_TIMEOUT = 30.0
# After that flush and the FIN, how long we keep draining until the peer closes too.
CLOSE_LINGER = 5.0
UDP_RECEIVE_SIZE = 65535  # §6.8
MULTICAST_TTL = 2  # §6.9
# Accepted sockets get daemon-assigned ids from here up; the engine's own counter starts
# at 1, so the two ranges cannot meet in practice (§9.7), and ids in use are skipped.
FIRST_ACCEPT_ID = 0x8000_0000
# accept() failures (EMFILE...) are retried after a pause growing up to the maximum.
ACCEPT_BACKOFF_FIRST = 0.05
ACCEPT_BACKOFF_MAX = 1.0

_TCP_SEND = int(wire.Op.TCP_SEND)
CLOSE_POLICY_VIOLATION = 1008  # auth failures
CLOSE_PROTOCOL_ERROR = 1002  # wrong envelope version


class TcpState(enum.Enum):
    CONNECTING = "connecting"  # counted in Stats.pending_connects
    PENDING = "pending"  # connected, not yet activated: Stats.pending_tcp
    ACTIVE = "active"  # Stats.tcp_sockets
    CLOSED = "closed"


_STAT_FOR_STATE = {
    TcpState.CONNECTING: "pending_connects",
    TcpState.PENDING: "pending_tcp",
    TcpState.ACTIVE: "tcp_sockets",
}


@attrs.define(eq=False)
class TcpConn:
    """One TCP socket of a session, from TCP_CONNECT (or accept) to its close."""

    socket_id: int
    state: TcpState = TcpState.CLOSED
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    # Cancelled by activation; the pending watcher runs inside it.
    pending_scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    sock: trio.socket.SocketType | None = None
    stream: trio.abc.Stream | None = None  # SocketStream, or SSLStream after TCP_SECURE
    activated: bool = False
    secure: wire.TcpSecure | None = None  # set when TCP_SECURE activated the socket
    secure_request_id: int = 0
    # TCP_SEND data not yet written, in order; the writer takes it all at once.
    outgoing: collections.deque[bytes | memoryview] = attrs.field(factory=collections.deque)
    outgoing_bytes: int = 0
    data_ready: trio.Event = attrs.field(factory=trio.Event)
    space_ready: trio.Event = attrs.field(factory=trio.Event)
    write_scope: trio.CancelScope | None = None
    write_failed: bool = False
    close_requested: bool = False
    close_sent: bool = False

    def close_socket(self) -> None:
        if self.sock is not None:
            self.sock.close()

    def abort(self) -> None:
        """Close now, whatever state it is in; its task unwinds on its own."""
        self.scope.cancel()
        self.close_socket()


@attrs.define(eq=False)
class BoundSocket:
    """A TCP listener or a UDP socket: bound by its task, then served until closed."""

    socket_id: int
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    sock: trio.socket.SocketType | None = None

    def close_socket(self) -> None:
        if self.sock is not None:
            self.sock.close()  # a listener's port is free as soon as this returns


BoundTable = dict[int, BoundSocket]


def take_outgoing(conn: TcpConn) -> bytes | memoryview:
    """The next write for a socket: queued chunks joined up to ``WRITE_JOIN_LIMIT``.

    Small TCP_SEND chunks are joined so one system call carries many; a large chunk is
    written as it is, so joining never copies megabytes (or doubles peak memory).
    """
    chunks = conn.outgoing
    first = chunks.popleft()
    size = len(first)
    if size >= WRITE_JOIN_LIMIT or not chunks:
        conn.outgoing_bytes -= size
        return first
    parts = [first]
    while chunks and size + len(chunks[0]) <= WRITE_JOIN_LIMIT:
        chunk = chunks.popleft()
        parts.append(chunk)
        size += len(chunk)
    conn.outgoing_bytes -= size
    return b"".join(parts)


def strip_brackets(host: str) -> str:
    if len(host) >= 2 and host[0] == "[" and host[-1] == "]":
        return host[1:-1]
    return host


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


_tls_contexts: dict[bool, ssl.SSLContext] = {}


def tls_context(skip_verify: bool) -> ssl.SSLContext:
    """The system trust store (honours SSL_CERT_FILE/SSL_CERT_DIR); built once per kind."""
    context = _tls_contexts.get(skip_verify)
    if context is None:
        context = ssl.create_default_context()
        if skip_verify:  # flags bit 0: no certificate and no host name check (§6.6)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        _tls_contexts[skip_verify] = context
    return context


def set_reuse_address(sock: trio.socket.SocketType) -> None:
    """Rebind right after a close, but never share a port another socket listens on."""
    if sys.platform == "win32":
        # On Windows SO_REUSEADDR would let us steal a port in use; this is the opposite.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)  # type: ignore[attr-defined]
    else:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)


async def open_listening_socket(address: str, port: int) -> trio.socket.SocketType:
    """Bind and listen per §6.7: empty address = 0.0.0.0; names are resolved. OSError."""
    host = strip_brackets(address) or "0.0.0.0"
    infos = await trio.socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    if not infos:
        raise OSError(errno.EADDRNOTAVAIL, f"no address for {host!r}")
    family, kind, proto, _name, sockaddr = infos[0]
    sock = trio.socket.socket(family, kind, proto)
    try:
        set_reuse_address(sock)
        await sock.bind(sockaddr)
        sock.listen(1024)
    except BaseException:
        sock.close()
        raise
    return sock


class Session:
    """The AUTHENTICATED state of one WebSocket: socket tables and request handlers."""

    def __init__(self, stats: Stats, nursery: trio.Nursery, out: trio.MemorySendChannel[Any]):
        self.stats = stats
        self.nursery = nursery
        self.out = out
        self.tcp: dict[int, TcpConn] = {}
        self.listeners: BoundTable = {}
        self.udp: BoundTable = {}
        self.next_accept_id = FIRST_ACCEPT_ID
        self.closing = False
        self.streams: streams.SessionStreams | None = None  # 0x40-0x44 (streams.py)

    # -- inbound ----------------------------------------------------------------------

    async def read_loop(self, ws: WebSocket) -> None:
        while True:
            data = await ws.receive()
            if data is None:
                return  # the WebSocket is closed
            if isinstance(data, str) or self.closing:
                continue  # text messages are ignored (§6.1)
            # The hot path, TCP_SEND, skips the generic parser.
            if len(data) >= 12 and data[1] == _TCP_SEND and data[0] == wire.VERSION:
                # A view, not a copy: the payload goes to the peer as it came.
                await self.tcp_send(int.from_bytes(data[8:12], "little"), memoryview(data)[12:])
                continue
            frame = wire.parse_frame(data)
            if frame is None:
                continue
            if frame.version != wire.VERSION:
                await self.out.send(wire.encode_error(frame.request_id, wire.INVALID_VERSION))
                await self.out.send(CLOSE_PROTOCOL_ERROR)
                self.closing = True
                continue
            if frame.opcode in streamwire.STREAM_OPCODES and self.streams is not None:
                await self.streams.receive(frame)  # streaming (streams.py)
                continue
            request = wire.parse_request(frame)
            if request is not None:
                await self.dispatch(request, frame.request_id)

    async def dispatch(self, request: wire.Request, request_id: int) -> None:
        match request:
            case wire.TcpSend(socket_id, data):
                await self.tcp_send(socket_id, data)
            case wire.TcpConnect():
                self.tcp_connect(request, request_id)
            case wire.TcpClose(socket_id):
                self.tcp_close(socket_id)
            case wire.TcpSecure():
                await self.tcp_secure(request, request_id)
            case wire.TcpListen():
                listener = self.start_bound(self.listeners, request.server_id)
                self.nursery.start_soon(self.tcp_listener, listener, request, request_id)
            case wire.TcpStopListen(server_id):
                self.close_bound(self.listeners, server_id)
            case wire.UdpBind():
                udp = self.start_bound(self.udp, request.socket_id)
                self.nursery.start_soon(self.udp_socket, udp, request, request_id)
            case wire.UdpSend():
                await self.udp_send(request)
            case wire.UdpClose(socket_id):
                self.close_bound(self.udp, socket_id)
            case wire.UdpMulticast():
                self.udp_multicast(request)
            case wire.UnknownOpcode():
                await self.out.send(wire.encode_error(request_id, wire.UNKNOWN_OPCODE))

    # -- TCP client sockets (§6.5, §6.6) ------------------------------------------------

    def move(self, conn: TcpConn, state: TcpState) -> None:
        """Change a socket's state and the /stats counters with it (always in step)."""
        old = _STAT_FOR_STATE.get(conn.state)
        if old is not None:
            setattr(self.stats, old, getattr(self.stats, old) - 1)
        new = _STAT_FOR_STATE.get(state)
        if new is not None:
            setattr(self.stats, new, getattr(self.stats, new) + 1)
        conn.state = state

    def tcp_connect(self, request: wire.TcpConnect, request_id: int) -> None:
        self.abort_tcp(request.socket_id)  # a reused id replaces the old socket (§9.8)
        conn = TcpConn(request.socket_id)
        self.move(conn, TcpState.CONNECTING)
        self.tcp[request.socket_id] = conn
        self.nursery.start_soon(self.tcp_client, conn, request, request_id)

    async def tcp_send(self, socket_id: int, data: bytes | memoryview) -> None:
        conn = self.tcp.get(socket_id)
        if conn is None or conn.stream is None or conn.close_requested:
            return  # unknown, still connecting, or closing: dropped silently (§6.5)
        if not conn.activated:
            conn.activated = True  # the first TCP_SEND activates a pending socket
            conn.pending_scope.cancel()
        if conn.write_failed or not data:
            return
        conn.outgoing.append(data)
        conn.outgoing_bytes += len(data)
        conn.data_ready.set()
        if conn.outgoing_bytes > SOCKET_BUFFER_CAP:
            conn.space_ready = trio.Event()
            await conn.space_ready.wait()

    async def tcp_secure(self, request: wire.TcpSecure, request_id: int) -> None:
        conn = self.tcp.get(request.socket_id)
        if conn is None or conn.stream is None or conn.activated:
            # Unknown, still connecting, or already activated: refused at once (§6.6).
            await self.out.send(wire.encode_tcp_secured(request_id, request.socket_id, False))
            return
        conn.activated = True
        conn.secure = request
        conn.secure_request_id = request_id
        conn.pending_scope.cancel()

    def tcp_close(self, socket_id: int) -> None:
        conn = self.tcp.pop(socket_id, None)
        if conn is None:
            return
        if conn.state is TcpState.ACTIVE:
            # Flush what the client sent, FIN, then report the close (§6.5).
            conn.close_requested = True
            conn.data_ready.set()
            conn.space_ready.set()
            if conn.write_scope is not None:
                conn.write_scope.deadline = trio.current_time() + CLOSE_FLUSH_TIMEOUT
        else:
            conn.abort()  # connecting, pending, or in its TLS handshake: closed silently

    def abort_tcp(self, socket_id: int) -> None:
        old = self.tcp.pop(socket_id, None)
        if old is not None:
            old.abort()

    def forget_tcp(self, conn: TcpConn) -> None:
        conn.close_socket()
        if self.tcp.get(conn.socket_id) is conn:
            del self.tcp[conn.socket_id]
        self.move(conn, TcpState.CLOSED)

    async def send_tcp_close(self, conn: TcpConn) -> None:
        if not conn.close_sent:
            conn.close_sent = True
            await self.out.send(wire.encode_tcp_close(conn.socket_id))

    async def tcp_client(self, conn: TcpConn, request: wire.TcpConnect, request_id: int) -> None:
        sid = conn.socket_id
        try:
            with conn.scope:
                stream = None
                with trio.move_on_after(CONNECT_TIMEOUT):
                    try:
                        stream = await trio.open_tcp_stream(
                            strip_brackets(request.host), request.port
                        )
                    except (OSError, ValueError, UnicodeError) as exc:
                        log.debug("socket %d: connect to %r failed: %s", sid, request.host, exc)
                if stream is None:
                    await self.out.send(wire.encode_tcp_connected(request_id, sid, False))
                    return
                conn.stream = stream
                conn.sock = stream.socket
                self.move(conn, TcpState.PENDING)
                await self.out.send(wire.encode_tcp_connected(request_id, sid, True))
                if not await self.wait_for_activation(conn):
                    await self.send_tcp_close(conn)  # the peer closed a pending socket (§9.4)
                    return
                if conn.secure is not None:
                    secured = await self.start_tls(conn, conn.secure)
                    await self.out.send(
                        wire.encode_tcp_secured(conn.secure_request_id, sid, secured)
                    )
                    if not secured:
                        return  # closed and forgotten, no TCP_CLOSE (§6.6)
                self.move(conn, TcpState.ACTIVE)
                await self.run_active(conn)
        except Exception:
            log.exception("socket %d: unexpected error", sid)
        finally:
            self.forget_tcp(conn)

    async def wait_for_activation(self, conn: TcpConn) -> bool:
        """Wait for TCP_SEND/TCP_SECURE; False if the peer closed first.

        §9.4: the original never reads a pending socket, so a peer that connects and
        closes is never reported. We wait for readability and peek one byte: EOF or an
        error means closed; data is left in the kernel for the (maybe TLS) reader.
        """
        assert conn.sock is not None
        with conn.pending_scope:
            await trio.lowlevel.wait_readable(conn.sock)
            try:
                peeked = await conn.sock.recv(1, socket.MSG_PEEK)
            except OSError:
                peeked = b""
            if not peeked:
                return False
            await trio.sleep_forever()  # data is waiting: only activation ends this
        return True

    async def start_tls(self, conn: TcpConn, request: wire.TcpSecure) -> bool:
        assert conn.stream is not None
        hostname = request.hostname or None
        with trio.move_on_after(TLS_HANDSHAKE_TIMEOUT):
            try:
                tls = trio.SSLStream(
                    conn.stream,
                    tls_context(request.skip_verify),
                    server_hostname=hostname,
                    # Many servers end without close_notify; treat that as a plain EOF.
                    https_compatible=True,
                )
                await tls.do_handshake()
            except (trio.BrokenResourceError, OSError, ValueError, ssl.SSLError) as exc:
                log.debug("socket %d: TLS handshake failed: %s", conn.socket_id, exc)
                return False
            conn.stream = tls
            return True
        log.debug("socket %d: TLS handshake timed out", conn.socket_id)
        return False

    async def tcp_accepted(self, conn: TcpConn) -> None:
        try:
            with conn.scope:
                await self.run_active(conn)
        except Exception:
            log.exception("socket %d: unexpected error", conn.socket_id)
        finally:
            self.forget_tcp(conn)

    async def run_active(self, conn: TcpConn) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.socket_writer, conn, nursery.cancel_scope)
            await self.socket_reader(conn)
            nursery.cancel_scope.cancel()

    async def socket_reader(self, conn: TcpConn) -> None:
        """Peer → TCP_RECV frames, then one TCP_CLOSE at EOF or on a read error."""
        stream = conn.stream
        assert stream is not None
        sid = conn.socket_id
        stats = self.stats
        out = self.out
        while True:
            try:
                data = await stream.receive_some(READ_SIZE)
            except STREAM_ERRORS:
                break
            if not data:
                break
            if conn.close_requested:
                continue  # the client has forgotten this socket; drain until it is closed
            stats.bytes_received += len(data)
            await out.send(wire.encode_tcp_recv(sid, data))
        await self.send_tcp_close(conn)

    async def socket_writer(self, conn: TcpConn, active_scope: trio.CancelScope) -> None:
        """TCP_SEND data → peer, joined per write; after a client TCP_CLOSE: flush, FIN."""
        stream = conn.stream
        assert stream is not None
        stats = self.stats
        with trio.CancelScope() as conn.write_scope:
            if conn.close_requested:
                conn.write_scope.deadline = trio.current_time() + CLOSE_FLUSH_TIMEOUT
            while True:
                if not conn.outgoing:
                    if conn.close_requested:
                        break
                    conn.data_ready = trio.Event()
                    await conn.data_ready.wait()
                    # One scheduling round lets the session reader queue the rest of the
                    # frames it already holds: one larger write instead of several.
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    continue
                data = take_outgoing(conn)
                if conn.outgoing_bytes <= SOCKET_BUFFER_CAP:
                    conn.space_ready.set()
                if conn.write_failed:
                    continue
                try:
                    await stream.send_all(data)
                except STREAM_ERRORS:
                    conn.write_failed = True  # silent (§6.5): the reader reports the close
                    continue
                stats.bytes_sent += len(data)
        if not conn.close_requested:
            return  # a flush cancelled for another reason; the active scope is ending
        if isinstance(stream, trio.SocketStream) and not conn.write_failed:
            with trio.move_on_after(1.0), contextlib.suppress(*STREAM_ERRORS):
                await stream.send_eof()  # FIN after the last byte the client sent
        # The client learns of the close now (§6.5 allows this). The socket stays open a
        # little longer so data the peer still sends is drained rather than answered with
        # a reset that could destroy what the peer has not read yet.
        await self.send_tcp_close(conn)
        if isinstance(stream, trio.SocketStream):
            active_scope.deadline = trio.current_time() + CLOSE_LINGER
        else:
            active_scope.cancel()  # TLS cannot half-close; close now

    # -- listeners and UDP sockets: one lifecycle ----------------------------------------

    def start_bound(self, table: BoundTable, socket_id: int) -> BoundSocket:
        self.close_bound(table, socket_id)  # a reused id replaces the old socket (§9.8)
        bound = BoundSocket(socket_id)
        table[socket_id] = bound
        return bound

    def close_bound(self, table: BoundTable, socket_id: int) -> None:
        old = table.pop(socket_id, None)
        if old is not None:
            old.scope.cancel()
            old.close_socket()

    async def run_bound(
        self,
        table: BoundTable,
        bound: BoundSocket,
        counter: str,
        bind: Callable[[], Awaitable[trio.socket.SocketType | None]],
        reply: Callable[[int | None], bytes],
        serve: Callable[[BoundSocket, trio.socket.SocketType], Awaitable[None]],
    ) -> None:
        """Bind, reply with the port (or the failure), count it in ``counter``, serve it;
        whatever ends it, the socket is closed and leaves ``table``."""
        try:
            with bound.scope:
                sock = await bind()
                if sock is None:
                    await self.out.send(reply(None))
                    return
                bound.sock = sock
                setattr(self.stats, counter, getattr(self.stats, counter) + 1)
                try:
                    await self.out.send(reply(sock.getsockname()[1]))
                    await serve(bound, sock)
                finally:
                    setattr(self.stats, counter, getattr(self.stats, counter) - 1)
        except Exception:
            log.exception("socket %d (%s): unexpected error", bound.socket_id, counter)
        finally:
            bound.close_socket()
            if table.get(bound.socket_id) is bound:
                del table[bound.socket_id]

    # -- TCP server sockets (§6.7) -------------------------------------------------------

    async def tcp_listener(self, listener: BoundSocket, request: wire.TcpListen, rid: int) -> None:
        async def bind() -> trio.socket.SocketType | None:
            try:
                return await open_listening_socket(request.address, request.port)
            except (OSError, ValueError, UnicodeError) as exc:
                log.debug("listener %d: cannot listen on %r: %s", sid, request.port, exc)
                return None

        sid = listener.socket_id
        reply = functools.partial(wire.encode_tcp_listen_result, rid, sid)
        await self.run_bound(self.listeners, listener, "tcp_servers", bind, reply, self.accept_loop)

    async def accept_loop(self, listener: BoundSocket, sock: trio.socket.SocketType) -> None:
        backoff = ACCEPT_BACKOFF_FIRST
        while True:
            try:
                peer_sock, address = await sock.accept()
            except OSError as exc:
                # EMFILE and friends: keep the listener, try again a little later (§9.10).
                log.warning("listener %d: accept failed: %s", listener.socket_id, exc)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, ACCEPT_BACKOFF_MAX)
                continue
            backoff = ACCEPT_BACKOFF_FIRST
            try:
                sid = self.allocate_accept_id()
                frame = wire.encode_tcp_accept(listener.socket_id, sid, address[1], address[0])
                await self.out.send(frame)  # before any TCP_RECV of that socket (§6.7)
            except BaseException:
                peer_sock.close()
                raise
            conn = TcpConn(sid, sock=peer_sock, stream=trio.SocketStream(peer_sock))
            conn.activated = True  # accepted sockets are active at once
            self.move(conn, TcpState.ACTIVE)
            self.tcp[sid] = conn
            self.nursery.start_soon(self.tcp_accepted, conn)

    def allocate_accept_id(self) -> int:
        while True:
            sid = self.next_accept_id
            self.next_accept_id = sid + 1 if sid < 0xFFFF_FFFF else FIRST_ACCEPT_ID
            if sid not in self.tcp:
                return sid

    # -- UDP (§6.8, §6.9) ----------------------------------------------------------------

    async def udp_socket(self, udp: BoundSocket, request: wire.UdpBind, rid: int) -> None:
        async def bind() -> trio.socket.SocketType | None:
            host = strip_brackets(request.address) or "0.0.0.0"
            if not is_ip_literal(host):  # UDP_BIND takes IP literals only (§6.8)
                return None
            sock = trio.socket.socket(
                socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM
            )
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                await sock.bind((host, request.port))
            except OSError as exc:
                log.debug("udp %d: cannot bind %r: %s", udp.socket_id, request.port, exc)
                sock.close()
                return None
            return sock

        reply = functools.partial(wire.encode_udp_bound, rid, udp.socket_id)
        await self.run_bound(self.udp, udp, "udp_sockets", bind, reply, self.udp_receive_loop)

    async def udp_receive_loop(self, udp: BoundSocket, sock: trio.socket.SocketType) -> None:
        while True:
            try:
                data, address = await sock.recvfrom(UDP_RECEIVE_SIZE)
            except ConnectionResetError:
                continue  # an ICMP port unreachable for an earlier send (§9.23)
            except OSError as exc:
                log.debug("udp %d: receive failed: %s", udp.socket_id, exc)
                await self.out.send(wire.encode_udp_close(udp.socket_id))
                return
            self.stats.bytes_received += len(data)
            await self.out.send(wire.encode_udp_recv(udp.socket_id, address[1], address[0], data))

    async def udp_send(self, request: wire.UdpSend) -> None:
        udp = self.udp.get(request.socket_id)
        if udp is None or udp.sock is None:
            return
        host = strip_brackets(request.address)
        if is_ip_literal(host):
            await self.udp_send_to(udp.sock, host, request.port, request.data)
        else:  # resolving may take seconds: do not hold up the session (§9.9)
            self.nursery.start_soon(self.udp_send_resolved, udp, host, request)

    async def udp_send_resolved(self, udp: BoundSocket, host: str, request: wire.UdpSend) -> None:
        sock = udp.sock
        if sock is None:
            return
        try:
            infos = await trio.socket.getaddrinfo(
                host, request.port, family=sock.family, type=socket.SOCK_DGRAM
            )
        except (OSError, UnicodeError, ValueError):
            return  # dropped silently (§6.8)
        if infos and self.udp.get(udp.socket_id) is udp:  # not closed meanwhile
            await self.udp_send_to(sock, str(infos[0][4][0]), request.port, request.data)

    async def udp_send_to(
        self, sock: trio.socket.SocketType, host: str, port: int, data: bytes
    ) -> None:
        try:
            await sock.sendto(data, (host, port))
        except (OSError, OverflowError, ValueError):
            return  # dropped silently (§6.8)
        self.stats.bytes_sent += len(data)

    def udp_multicast(self, request: wire.UdpMulticast) -> None:
        udp = self.udp.get(request.socket_id)
        if udp is None or udp.sock is None or udp.sock.family != socket.AF_INET:
            return
        try:
            group = ipaddress.IPv4Address(request.group.strip()).packed
        except ValueError:
            return  # non-IPv4 group: ignored (§6.9)
        sock = udp.sock
        interfaces = netif.multicast_interface_addresses()
        if request.join:
            joined = False
            for address in interfaces:
                if _set_membership(sock, socket.IP_ADD_MEMBERSHIP, group, address):
                    joined = True
            if not joined:
                _set_membership(sock, socket.IP_ADD_MEMBERSHIP, group, "0.0.0.0")
            outgoing = socket.inet_aton(interfaces[0] if interfaces else "0.0.0.0")
            try:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, outgoing)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, MULTICAST_TTL)
            except OSError as exc:
                log.debug("udp %d: multicast options: %s", request.socket_id, exc)
        else:
            for address in [*interfaces, "0.0.0.0"]:
                _set_membership(sock, socket.IP_DROP_MEMBERSHIP, group, address)

    # -- teardown ------------------------------------------------------------------------

    def close_all(self) -> None:
        """Close every socket of the session now (the tasks' own cleanup follows)."""
        for conn in self.tcp.values():
            conn.close_socket()
        for bound in [*self.listeners.values(), *self.udp.values()]:
            bound.close_socket()


def _set_membership(sock: trio.socket.SocketType, option: int, group: bytes, iface: str) -> bool:
    try:
        sock.setsockopt(socket.IPPROTO_IP, option, group + socket.inet_aton(iface))
    except OSError:
        return False  # per-interface failures are ignored (§6.9)
    return True


async def write_loop(
    frames: trio.MemoryReceiveChannel[Any], ws: WebSocket, session_scope: trio.CancelScope
) -> None:
    """The single owner of the WebSocket's send side; an int in the queue means "close".

    Whatever is queued when the writer wakes goes out in one write (coalescing): 200
    echo replies produced in one scheduling round cost one system call, not 200.
    """
    while True:
        frame = await frames.receive()
        batch: list[bytes] = []
        size = 0
        while True:
            if isinstance(frame, int):
                await ws.send_many(batch)
                await ws.close_soon(frame)
                # The read loop ends the session when the client answers the Close.
                await trio.sleep(CLOSE_WAIT_SECONDS)
                session_scope.cancel()
                return
            batch.append(frame)
            size += len(frame)
            if size >= WS_WRITE_BATCH:
                break  # large frames gain nothing from joining; copying them costs memory
            try:
                frame = frames.receive_nowait()
            except trio.WouldBlock:
                break
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
            return True


async def serve_session(ws: WebSocket, state: DaemonState) -> None:
    """One ``/io`` WebSocket from the ``101`` to its close."""
    stats = state.stats
    stats.ws_connections += 1
    try:
        if not await authenticate(ws, state.token):
            return
        out_send, out_receive = trio.open_memory_channel[Any](OUTBOUND_QUEUE)
        async with trio.open_nursery() as nursery:
            session = Session(stats, nursery, out_send)
            session.streams = streams.SessionStreams(state, out_send)
            nursery.start_soon(write_loop, out_receive, ws, nursery.cancel_scope)
            try:
                await session.read_loop(ws)
            finally:
                nursery.cancel_scope.cancel()
                session.close_all()
                session.streams.close_all()  # the session's streams die with it
    finally:
        stats.ws_connections -= 1
