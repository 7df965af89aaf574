"""TCP_SECURE (§6.6): the TLS path, where a socket leaves the reactor for a trio stream.

Design note: a plain socket of an ``/io`` session has no task; the session's reactor
(``iotcp``) reads it and TCP_SEND writes it directly. TLS cannot work that way: the
handshake, the records and the buffering belong to ``trio.SSLStream``, which wants a task
awaiting it. So TCP_SECURE takes the pending socket out of the readiness set for good,
wraps it in a ``SocketStream`` and hands it to ``tls_task``, which owns it until it is
closed: handshake, TCP_SECURED, then a reader (peer → TCP_RECV) and a writer (TCP_SEND
data → peer, and the flush after a client TCP_CLOSE) as two tasks. TLS sockets are few and
long-lived, so a task each costs nothing that matters, and keeping this here leaves the
reactor's hot path free of TLS branches beyond one ``conn.stream`` test in ``send``.

The functions take the session's ``TcpSockets`` table as their first argument; ``secure``
is bound as its method, so the session calls ``tcp.secure(...)`` with no extra hop.
"""

from __future__ import annotations

import logging
import ssl
from typing import TYPE_CHECKING

import trio

from jst.daemon import wire
from jst.daemon.iotcpclose import CLOSE_FLUSH_TIMEOUT
from jst.daemon.iotcpconn import (
    READ_SIZE,
    SOCKET_BUFFER_CAP,
    TcpConn,
    TcpState,
    take_outgoing,
)
from jst.daemon.websocket import STREAM_ERRORS

if TYPE_CHECKING:
    from jst.daemon.iotcp import TcpSockets

log = logging.getLogger("jst.daemon.io")

TLS_HANDSHAKE_TIMEOUT = 30.0  # §6.6

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


def secure(tcp: TcpSockets, request: wire.TcpSecure, request_id: int) -> bool:
    """Start TLS on a pending socket; False when refused at once (§6.6)."""
    conn = tcp.conns.get(request.socket_id)
    if (
        conn is None
        or conn.state is not TcpState.PENDING
        or conn.sock is None
        or conn.secure_request_id >= 0
    ):
        return False  # unknown, still connecting, already activated
    conn.secure_request_id = request_id
    if conn.interest:
        tcp.poller.unregister(conn.sock)
        conn.interest = 0
    tsock = trio.socket.from_stdlib_socket(conn.sock)
    conn.sock = None
    conn.stream = trio.SocketStream(tsock)
    conn.scope = trio.CancelScope()
    tcp.io.nursery.start_soon(tls_task, tcp, conn, request)
    return True


async def tls_task(tcp: TcpSockets, conn: TcpConn, request: wire.TcpSecure) -> None:
    sid = conn.socket_id
    assert conn.scope is not None
    try:
        with conn.scope:
            secured = await start_tls(conn, request)
            await tcp.outbox.put(wire.encode_tcp_secured(conn.secure_request_id, sid, secured))
            if not secured:
                return  # closed and forgotten, no TCP_CLOSE (§6.6)
            tcp.move(conn, TcpState.ACTIVE)
            conn.data_ready = trio.Event()
            await run_stream(tcp, conn)
    except Exception:
        log.exception("socket %d: unexpected error", sid)
    finally:
        tcp.forget(conn)


async def start_tls(conn: TcpConn, request: wire.TcpSecure) -> bool:
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


async def run_stream(tcp: TcpSockets, conn: TcpConn) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream_writer, tcp, conn, nursery.cancel_scope)
        await stream_reader(tcp, conn)
        nursery.cancel_scope.cancel()


async def stream_reader(tcp: TcpSockets, conn: TcpConn) -> None:
    """Peer → TCP_RECV frames, then one TCP_CLOSE at EOF or on a read error."""
    stream = conn.stream
    assert stream is not None
    while True:
        try:
            data = await stream.receive_some(READ_SIZE)
        except STREAM_ERRORS:
            break
        if not data:
            break
        if conn.close_requested:
            continue  # the client has forgotten this socket; drain until it is closed
        tcp.stats.bytes_received += len(data)
        await tcp.outbox.put(wire.encode_tcp_recv(conn.socket_id, data))
    if not conn.close_sent:
        conn.close_sent = True
        await tcp.outbox.put(wire.encode_tcp_close(conn.socket_id))


async def stream_writer(tcp: TcpSockets, conn: TcpConn, active_scope: trio.CancelScope) -> None:
    """TCP_SEND data → peer, joined per write; after a client TCP_CLOSE: flush, close."""
    stream = conn.stream
    assert stream is not None
    with trio.CancelScope() as conn.write_scope:
        if conn.close_requested:
            conn.write_scope.deadline = trio.current_time() + CLOSE_FLUSH_TIMEOUT
        while True:
            if not conn.outgoing:
                if conn.close_requested:
                    break
                conn.data_ready = trio.Event()
                await conn.data_ready.wait()
                continue
            data = take_outgoing(conn)
            if conn.space_ready is not None and conn.outgoing_bytes <= SOCKET_BUFFER_CAP:
                conn.space_ready.set()
            if conn.write_failed:
                continue
            try:
                await stream.send_all(data)
            except STREAM_ERRORS:
                conn.write_failed = True  # silent (§6.5): the reader reports the close
                continue
            tcp.stats.bytes_sent += len(data)
    if not conn.close_requested:
        return  # a flush cancelled for another reason; the active scope is ending
    if not conn.close_sent:
        conn.close_sent = True
        await tcp.outbox.put(wire.encode_tcp_close(conn.socket_id))
    active_scope.cancel()  # TLS cannot half-close; close now


def stream_socket(stream: trio.abc.Stream) -> trio.socket.SocketType | None:
    """The trio socket under a TLS socket's stream (closing it wakes its tasks at once)."""
    if isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if isinstance(stream, trio.SocketStream):
        return stream.socket
    return None
