"""The TCP sockets of one ``/io`` session: the table, connect, pending, active (§6.5).

Where the work happens (issue 18: the cost per message must not grow with the number of
sockets, and a waiting socket must cost little):

* A TCP_CONNECT runs in a short task (``connect_task``) that ends once TCP_CONNECTED is
  queued. From then on a plain socket has **no task**: it is a ``TcpConn`` in the
  session's table and a registration in the session's readiness set (``iopoll``).
* ``reactor`` is the one task that waits on that set. A pending socket that becomes
  readable is peeked (§9.4: EOF → TCP_CLOSE; data → left in the kernel and no longer
  watched until activation). An active one is read (up to ``READ_SIZE``) straight into a
  TCP_RECV frame; EOF or an error queues TCP_CLOSE and closes it.
* TCP_SEND data is written from the session's read loop without a task switch: queued
  on the socket and written by ``flush_dirty`` once the WebSocket data already received
  has been dispatched (so a burst of small sends to one socket costs one ``send``). What
  the kernel does not take waits for write readiness, reported by the same set.
* TLS (TCP_SECURE) and the graceful close after a client TCP_CLOSE are rare and
  long-lived in time rather than in number: they run as tasks with trio streams, as all
  sockets did before, in their own modules (``iotcptls``, ``iotcpclose``). This module
  keeps the hot path (``send``, ``flush``, ``reactor``) and the bookkeeping all share;
  the socket record itself is in ``iotcpconn``.

Ordering: every frame about one socket is produced by whoever owns it at that moment
(connect task, then reactor, or the TLS task), and ownership passes only after the
previous owner's frames are queued, so frames of a socket are never reordered.

Ownership and closing: a socket is closed exactly once, by ``forget``, after it has left
the readiness set (a selector must never see a closed descriptor). When the WebSocket
closes, ``close_all`` closes what the reactor owned; tasks close theirs as they unwind.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import ipaddress
import itertools
import logging
import os
import socket
from typing import Any

import trio

from jst.daemon import iopoll, iotcpclose, iotcptls, wire
from jst.daemon.ioqueue import SessionIO
from jst.daemon.iotcpconn import READ_SIZE, SOCKET_BUFFER_CAP, TcpConn, TcpState
from jst.daemon.iotcptls import stream_socket

log = logging.getLogger("jst.daemon.io")

CONNECT_TIMEOUT = 30.0  # §6.5
# Accepted sockets get daemon-assigned ids from here up; the engine's own counter starts
# at 1, so the two ranges cannot meet in practice (§9.7), and ids in use are skipped.
FIRST_ACCEPT_ID = 0x8000_0000
# Buffers per sendmsg (IOV_MAX is 1024 on Linux, the BSDs and macOS).
IOV_LIMIT = 512
_HAVE_SENDMSG = hasattr(socket.socket, "sendmsg")  # not on Windows
# Sockets closed between two checkpoints when a session ends.
CLOSE_BATCH = 256

_STAT_FOR_STATE = {
    TcpState.CONNECTING: "pending_connects",
    TcpState.PENDING: "pending_tcp",
    TcpState.ACTIVE: "tcp_sockets",
}


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


def plain_socket(tsock: trio.socket.SocketType) -> socket.socket:
    """A connected trio socket as a non-blocking stdlib socket the reactor owns."""
    family, kind, proto = tsock.family, tsock.type, tsock.proto
    sock = socket.socket(family, kind, proto, fileno=tsock.detach())
    sock.setblocking(False)
    with contextlib.suppress(OSError):  # as trio.SocketStream does: small frames go now
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


# What a non-blocking connect() answers while the handshake is under way (10035 is
# Windows' WSAEWOULDBLOCK).
_CONNECT_IN_PROGRESS = {errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN, 10035}


async def open_connection(host: str, port: int) -> socket.socket:
    """Connect; OSError on failure. IP literals (what the engine sends for peers) with a
    plain non-blocking connect and one readiness wait; names through trio's happy
    eyeballs."""
    host = strip_brackets(host)
    if not is_ip_literal(host):
        stream = await trio.open_tcp_stream(host, port)
        return plain_socket(stream.socket)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        with contextlib.suppress(OSError):  # as trio.SocketStream does: small frames go now
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        error = sock.connect_ex((host, port))
        if error in _CONNECT_IN_PROGRESS:
            await trio.lowlevel.wait_writable(sock)
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            raise OSError(error, os.strerror(error))
    except BaseException:
        sock.close()
        raise
    return sock


class TcpSockets:
    """The TCP table of one session and everything that happens to its sockets."""

    def __init__(self, io: SessionIO, poller: iopoll.Poller) -> None:
        self.io = io
        self.stats = io.stats
        self.outbox = io.outbox
        self.poller = poller
        self.conns: dict[int, TcpConn] = {}
        self.dirty: list[TcpConn] = []
        self.next_accept_id = FIRST_ACCEPT_ID
        # One receive buffer for every plain socket (one copy into the frame, no 128 KiB
        # allocation per read).
        self._buffer = bytearray(READ_SIZE)
        self._view = memoryview(self._buffer)

    # -- bookkeeping ---------------------------------------------------------------------

    def move(self, conn: TcpConn, state: TcpState) -> None:
        """Change a socket's state and the /stats counters with it (always in step)."""
        old = _STAT_FOR_STATE.get(conn.state)
        if old is not None:
            setattr(self.stats, old, getattr(self.stats, old) - 1)
        new = _STAT_FOR_STATE.get(state)
        if new is not None:
            setattr(self.stats, new, getattr(self.stats, new) + 1)
        conn.state = state

    def watch(self, conn: TcpConn, events: int) -> None:
        """Register (or change, or drop) the socket's interest in the readiness set."""
        sock = conn.sock
        assert sock is not None
        if events == conn.interest:
            return
        if not events:
            self.poller.unregister(sock)
        elif conn.interest:
            self.poller.modify(sock, events, conn)
        else:
            self.poller.register(sock, events, conn)
        conn.interest = events

    def forget(self, conn: TcpConn) -> None:
        """Close the socket (once), drop it from the table and the counters."""
        sock = conn.sock
        if sock is not None:
            if conn.interest:
                self.poller.unregister(sock)
                conn.interest = 0
            sock.close()
            conn.sock = None
        if conn.stream is not None:
            trio_sock = stream_socket(conn.stream)
            if trio_sock is not None:
                trio_sock.close()
        if self.conns.get(conn.socket_id) is conn:
            del self.conns[conn.socket_id]
        if conn.space_ready is not None:
            conn.space_ready.set()
        self.move(conn, TcpState.CLOSED)

    def abort(self, conn: TcpConn) -> None:
        """Close now, whatever state it is in, silently; a task owning it unwinds."""
        if conn.scope is not None:
            conn.scope.cancel()  # the task closes what it holds on its way out
            if conn.stream is not None:
                trio_sock = stream_socket(conn.stream)
                if trio_sock is not None:
                    trio_sock.close()  # wakes the task at once (trio notifies waiters)
            return
        self.forget(conn)

    def abort_id(self, socket_id: int) -> None:
        old = self.conns.pop(socket_id, None)
        if old is not None:
            self.abort(old)

    def queue_close(self, conn: TcpConn) -> None:
        if not conn.close_sent:
            conn.close_sent = True
            self.outbox.put_nowait(wire.encode_tcp_close(conn.socket_id))

    async def close_all(self) -> None:
        """The WebSocket is gone: close what the reactor owns (tasks are already gone).

        One ``close()`` per socket, and a checkpoint every ``CLOSE_BATCH`` of them: the
        kernel's work for ten thousand closes is a few hundred milliseconds, and a new
        session (an extension reloading) is served in between rather than after.
        """
        for index, conn in enumerate(list(self.conns.values()), start=1):
            if conn.sock is not None:
                if conn.interest:
                    self.poller.unregister(conn.sock)
                    conn.interest = 0
                conn.sock.close()
                conn.sock = None
            self.move(conn, TcpState.CLOSED)
            if index % CLOSE_BATCH == 0:
                await trio.lowlevel.checkpoint()
        self.conns.clear()
        self.dirty.clear()

    # -- requests ------------------------------------------------------------------------

    def connect(self, request: wire.TcpConnect, request_id: int) -> None:
        self.abort_id(request.socket_id)  # a reused id replaces the old socket (§9.8)
        conn = TcpConn(request.socket_id)
        self.move(conn, TcpState.CONNECTING)
        self.conns[request.socket_id] = conn
        conn.scope = trio.CancelScope()
        self.io.nursery.start_soon(self.connect_task, conn, request, request_id)

    async def send(self, socket_id: int, data: bytes | memoryview) -> None:
        conn = self.conns.get(socket_id)
        if conn is None or conn.close_requested:
            return  # unknown or closing: dropped silently (§6.5)
        state = conn.state
        if state is TcpState.PENDING:
            # The first TCP_SEND activates it; during a TLS handshake the data waits.
            if conn.secure_request_id < 0:
                self.move(conn, TcpState.ACTIVE)
                if conn.sock is not None:
                    self.watch(conn, iopoll.READ)
        elif state is not TcpState.ACTIVE:
            return  # still connecting: dropped (§6.5)
        if conn.write_failed or not data:
            return
        if conn.outgoing is None:
            conn.outgoing = collections.deque()
        conn.outgoing.append(data)
        conn.outgoing_bytes += len(data)
        if conn.stream is not None:  # a TLS socket: its writer task sends
            if conn.data_ready is not None:
                conn.data_ready.set()
        elif not conn.dirty and not conn.interest & iopoll.WRITE:
            conn.dirty = True
            self.dirty.append(conn)
        if conn.outgoing_bytes > SOCKET_BUFFER_CAP:
            if conn.dirty:
                self.flush_dirty()
            while conn.outgoing_bytes > SOCKET_BUFFER_CAP and conn.state is TcpState.ACTIVE:
                conn.space_ready = trio.Event()
                await conn.space_ready.wait()  # the §9.9 fallback: never drop, never reorder

    def flush_dirty(self) -> None:
        """Write what TCP_SENDs queued since the last call, one joined write per socket."""
        dirty = self.dirty
        self.dirty = []
        for conn in dirty:
            conn.dirty = False
            if conn.sock is not None and conn.outgoing:
                self.flush(conn)

    def flush(self, conn: TcpConn) -> None:
        """Write queued data until the kernel takes no more; then wait for writability."""
        sock = conn.sock
        chunks = conn.outgoing
        assert sock is not None
        if chunks is None:
            chunks = conn.outgoing = collections.deque()
        while chunks:
            # Queued chunks go out as one vector (no joined copy); one chunk as it is.
            try:
                if len(chunks) == 1 or not _HAVE_SENDMSG:
                    offered = len(chunks[0])
                    sent = sock.send(chunks[0])
                else:
                    batch = list(itertools.islice(chunks, IOV_LIMIT))
                    offered = sum(map(len, batch))
                    sent = sock.sendmsg(batch)
            except BlockingIOError:
                break
            except OSError:
                conn.write_failed = True  # silent (§6.5): the reader reports the close
                chunks.clear()
                conn.outgoing_bytes = 0
                break
            self.stats.bytes_sent += sent
            conn.outgoing_bytes -= sent
            short = sent < offered
            while sent:
                size = len(chunks[0])
                if sent >= size:
                    chunks.popleft()
                    sent -= size
                else:
                    chunks[0] = memoryview(chunks[0])[sent:]
                    sent = 0
            if short:
                break  # the kernel's buffer is full: wait until it is writable
        if chunks:
            self.watch(conn, iopoll.READ | iopoll.WRITE)
        elif conn.interest & iopoll.WRITE:
            self.watch(conn, iopoll.READ)
        if conn.space_ready is not None and conn.outgoing_bytes <= SOCKET_BUFFER_CAP:
            conn.space_ready.set()

    # The two rare, task-owned phases of a socket, in their own modules: bound here as
    # methods, so the session calls ``tcp.secure(...)`` and ``tcp.close(...)`` with no
    # extra hop.
    secure = iotcptls.secure  # TCP_SECURE (§6.6)
    close = iotcpclose.close  # a client's TCP_CLOSE (§6.5)

    # -- the tasks -----------------------------------------------------------------------

    async def connect_task(self, conn: TcpConn, request: wire.TcpConnect, rid: int) -> None:
        sid = conn.socket_id
        assert conn.scope is not None
        handed_over = False
        try:
            with conn.scope:
                sock = None
                with trio.move_on_after(CONNECT_TIMEOUT):
                    try:
                        sock = await open_connection(request.host, request.port)
                    except (OSError, ValueError, UnicodeError) as exc:
                        log.debug("socket %d: connect to %r failed: %s", sid, request.host, exc)
                if sock is None:
                    await self.outbox.put(wire.encode_tcp_connected(rid, sid, False))
                    return
                conn.sock = sock
                self.move(conn, TcpState.PENDING)
                await self.outbox.put(wire.encode_tcp_connected(rid, sid, True))
                if self.conns.get(sid) is not conn:
                    return  # closed meanwhile
                # From here the reactor owns it: watched for a remote close (§9.4).
                conn.scope = None
                self.watch(conn, iopoll.READ)
                handed_over = True
        except Exception:
            log.exception("socket %d: unexpected error", sid)
        finally:
            if not handed_over:
                self.forget(conn)

    async def reactor(self) -> None:
        """The one task reading plain sockets and writing what the kernel refused earlier."""
        outbox = self.outbox
        view = self._view
        stats = self.stats
        header = wire.tcp_recv_header
        while True:
            if outbox.full:
                await outbox.wait_space()  # a slow WebSocket: TCP pushes back on the peers
            for conn, events in await self.poller.wait():
                sock = conn.sock
                if sock is None:
                    continue  # closed by an earlier event of this round
                if events & iopoll.WRITE:
                    self.flush(conn)
                if not events & iopoll.READ:
                    continue
                if conn.state is TcpState.PENDING:
                    self.pending_readable(conn, sock)
                    continue
                try:
                    size = sock.recv_into(view)
                except BlockingIOError:
                    continue
                except OSError:
                    size = 0
                if not size:
                    self.queue_close(conn)
                    self.forget(conn)
                    continue
                stats.bytes_received += size
                outbox.put_nowait(b"".join((header(conn.socket_id), view[:size])))
                if outbox.full:
                    break  # the rest stay ready (level-triggered) for the next round
            outbox.send_now()

    def pending_readable(self, conn: TcpConn, sock: socket.socket) -> None:
        """§9.4: the original never reads a pending socket, so a peer that connects and
        closes is never reported. We peek one byte: EOF or an error means closed; data is
        left in the kernel for the first reader, and the socket is no longer watched."""
        try:
            peeked = sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return
        except OSError:
            peeked = b""
        if peeked:
            self.watch(conn, 0)
            return
        self.queue_close(conn)
        self.forget(conn)

    # -- accepted sockets ----------------------------------------------------------------

    def adopt_accepted(self, listener_id: int, tsock: trio.socket.SocketType, address: Any) -> None:
        """An accepted connection: TCP_ACCEPT now, active at once, the reactor reads it."""
        sock = plain_socket(tsock)
        sid = self.allocate_accept_id()
        self.outbox.put_nowait(wire.encode_tcp_accept(listener_id, sid, address[1], address[0]))
        conn = TcpConn(sid, sock=sock)
        self.move(conn, TcpState.ACTIVE)
        self.conns[sid] = conn
        self.watch(conn, iopoll.READ)

    def allocate_accept_id(self) -> int:
        while True:
            sid = self.next_accept_id
            self.next_accept_id = sid + 1 if sid < 0xFFFF_FFFF else FIRST_ACCEPT_ID
            if sid not in self.conns:
                return sid
