"""A client's TCP_CLOSE of an active socket (§6.5): flush, FIN, TCP_CLOSE, linger.

Design note: §6.5 asks that what the client sent before TCP_CLOSE is still flushed to
the peer, then FIN, and that a TCP_CLOSE event follows. That takes time (a slow peer, a
full kernel buffer), so the graceful close is a phase of its own in a socket's life,
owned by one task, like the TLS path (``iotcptls``): ``close`` takes the plain
socket out of the reactor's readiness set and starts ``closing_task``; a TLS socket's
writer task (``iotcptls``) flushes once ``close`` has woken it, then closes (TLS has no
half-close). A socket that is not
active yet (connecting, pending, in its handshake) is aborted silently instead.

Closes the daemon starts (EOF, errors, the session ending) stay in ``iotcp``, beside the
reactor that sees them. ``close`` takes the session's ``TcpSockets`` table as its first
argument and is bound as its method, so the session calls ``tcp.close(...)`` directly.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from typing import TYPE_CHECKING

import trio

from jst.daemon import wire
from jst.daemon.iotcpconn import READ_SIZE, TcpConn, TcpState, take_outgoing

if TYPE_CHECKING:
    from jst.daemon.iotcp import TcpSockets

log = logging.getLogger("jst.daemon.io")

# After a client TCP_CLOSE, how long unsent data may take to reach a slow peer.
CLOSE_FLUSH_TIMEOUT = 30.0
# After that flush and the FIN, how long we keep draining until the peer closes too.
CLOSE_LINGER = 5.0


def close(tcp: TcpSockets, socket_id: int) -> None:
    conn = tcp.conns.pop(socket_id, None)
    if conn is None:
        return
    if conn.state is not TcpState.ACTIVE:
        tcp.abort(conn)  # connecting, pending, or in its TLS handshake: silent
        return
    # Flush what the client sent, FIN, then report the close (§6.5).
    conn.close_requested = True
    if conn.stream is not None:  # TLS: its writer task does it
        if conn.data_ready is not None:
            conn.data_ready.set()
        if conn.space_ready is not None:
            conn.space_ready.set()
        if conn.write_scope is not None:
            conn.write_scope.deadline = trio.current_time() + CLOSE_FLUSH_TIMEOUT
        return
    if conn.interest:
        assert conn.sock is not None
        tcp.poller.unregister(conn.sock)
        conn.interest = 0
    if conn.space_ready is not None:
        conn.space_ready.set()
    conn.scope = trio.CancelScope()
    tcp.io.nursery.start_soon(closing_task, tcp, conn)


async def closing_task(tcp: TcpSockets, conn: TcpConn) -> None:
    """After a client TCP_CLOSE of a plain socket: flush, FIN, TCP_CLOSE, linger."""
    sock = conn.sock
    assert sock is not None
    assert conn.scope is not None
    try:
        with conn.scope:
            with trio.move_on_after(CLOSE_FLUSH_TIMEOUT):
                while conn.outgoing and not conn.write_failed:
                    data = take_outgoing(conn)
                    try:
                        await trio.lowlevel.wait_writable(sock)
                        sent = sock.send(data)
                    except BlockingIOError:
                        sent = 0
                    except OSError:
                        conn.write_failed = True
                        break
                    tcp.stats.bytes_sent += sent
                    if sent < len(data):
                        conn.outgoing.appendleft(memoryview(data)[sent:])
                        conn.outgoing_bytes += len(data) - sent
            if not conn.write_failed:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)  # FIN after the last byte sent
            # The client learns of the close now (§6.5 allows this). The socket stays
            # open a little longer so data the peer still sends is drained rather
            # than answered with a reset that could destroy what it has not read.
            await tcp.outbox.put(wire.encode_tcp_close(conn.socket_id))
            conn.close_sent = True
            with trio.move_on_after(CLOSE_LINGER):
                while True:
                    await trio.lowlevel.wait_readable(sock)
                    try:
                        if not sock.recv(READ_SIZE):
                            break
                    except BlockingIOError:
                        continue
                    except OSError:
                        break
    except Exception:
        log.exception("socket %d: unexpected error", conn.socket_id)
    finally:
        conn.scope = None
        trio.lowlevel.notify_closing(sock)
        tcp.forget(conn)
