"""One TCP socket of an ``/io`` session as a record, and what every TCP module shares.

Design note: the TCP side of a session is split along the life of a socket. ``iotcp``
owns the session's table and the hot path (connect, the reactor, TCP_SEND writes);
``iotcptls`` the TLS path, where a socket leaves the reactor for a trio ``SSLStream``
(§6.6); ``iotcpclose`` the graceful close after a client TCP_CLOSE (§6.5). All three work
on the record below, so it lives here, below them: they import it, not each other's
classes, and no import cycle forms. Nothing here does I/O.
"""

from __future__ import annotations

import collections
import enum
import socket

import attrs
import trio

# Python pays per message, not per byte: one large read becomes one TCP_RECV frame.
# Measured with `make bench` (1 socket, download): 16 KiB reads reach about a third of
# what 128 KiB reads do; 256 KiB adds nothing more and doubles the worst-case queue memory.
READ_SIZE = 128 * 1024
# Unsent TCP_SEND bytes one socket may hold before the session waits for it (§9.9).
SOCKET_BUFFER_CAP = 16 * 1024 * 1024
# Queued TCP_SEND chunks are joined into writes of up to this size.
WRITE_JOIN_LIMIT = 256 * 1024


class TcpState(enum.Enum):
    CONNECTING = "connecting"  # counted in Stats.pending_connects
    PENDING = "pending"  # connected, not yet activated: Stats.pending_tcp
    ACTIVE = "active"  # Stats.tcp_sockets
    CLOSED = "closed"


@attrs.define(eq=False)
class TcpConn:
    """One TCP socket of a session, from TCP_CONNECT (or accept) to its close.

    Kept small (slots, everything else created when needed): a session may hold ten
    thousand of these while they wait for their first TCP_SEND.
    """

    socket_id: int
    state: TcpState = TcpState.CLOSED
    # The plain socket while the reactor owns it (non-blocking, registered or not).
    sock: socket.socket | None = None
    interest: int = 0  # what it is registered for in the readiness set (0: not at all)
    # The task owning it (connecting, TLS, graceful close), cancelled by an abort.
    scope: trio.CancelScope | None = None
    stream: trio.abc.Stream | None = None  # the TLS path: SSLStream over a SocketStream
    # TCP_SEND data not yet written, in order.
    outgoing: collections.deque[bytes | memoryview] | None = None
    outgoing_bytes: int = 0
    space_ready: trio.Event | None = None  # the session waits for it above the cap
    data_ready: trio.Event | None = None  # the TLS writer task waits for it
    write_scope: trio.CancelScope | None = None
    secure_request_id: int = -1  # set by TCP_SECURE until its handshake is done
    write_failed: bool = False
    close_requested: bool = False
    close_sent: bool = False
    dirty: bool = False  # has data waiting for flush_dirty


def take_outgoing(conn: TcpConn) -> bytes | memoryview:
    """The next write for a socket: queued chunks joined up to ``WRITE_JOIN_LIMIT``.

    Small TCP_SEND chunks are joined so one system call carries many; a large chunk is
    written as it is, so joining never copies megabytes (or doubles peak memory).
    """
    chunks = conn.outgoing
    assert chunks
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
