"""The daemon's HTTP/1.1 server: the accept loop and the set of open connections.

Design notes
------------
One task per connection (``connection.py`` serves it); this module accepts them and
keeps the bounds that concern all of them together (issue 12, "starvation without the
token": nothing a client without the token does may hold the daemon's descriptors):

* Connections waiting for a request head (or pre-AUTH ``/io`` sessions) are droppable,
  kept in two insertion-ordered sets: anonymous ones (no authorized request yet) and
  idle authorized ones. ``sweep`` drops those past their deadline once a second.
* At most ``max_waiting`` anonymous connections may wait at once (a quarter of the fd
  limit, 512 at most); the oldest is dropped for a newcomer.
* When ``accept`` fails for lack of descriptors, the oldest waiting connections are
  dropped first (anonymous ones, then idle authorized ones); with nothing left to drop,
  a reserve descriptor is freed to accept and close the newcomer, so the listening
  queue keeps moving instead of filling up.

Shutdown (``serve``): the listener closes first, so nothing new is accepted; connections
waiting for their next request are closed at once; a request in progress gets
``grace_seconds`` to finish; WebSocket sessions are ended. Then everything left is
cancelled.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
from collections.abc import Callable

import attrs
import trio

from jst.daemon.connection import ConnectionState, HttpConnection
from jst.daemon.state import DaemonState

log = logging.getLogger("jst.daemon.http")

# Waiting connections without an authorized request: this many at most, whatever the
# descriptor limit (each may hold a 64 KiB partial head).
MAX_WAITING_CAP = 512
# accept() errors that mean "out of descriptors or memory": drop waiting connections.
FD_PRESSURE_ERRNOS = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
# accept() errors about one connection only (it died in the queue): try the next one.
ACCEPT_RETRY_ERRNOS = frozenset((errno.ECONNABORTED, errno.EPERM, getattr(errno, "EPROTO", 71)))
SHED_BATCH = 16
# How often waiting connections are checked against their deadlines.
SWEEP_SECONDS = 1.0


def waiting_cap() -> int:
    """How many anonymous connections may wait for a head: a quarter of the fd limit."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return MAX_WAITING_CAP
    if soft == getattr(resource, "RLIM_INFINITY", -1) or soft <= 0:
        return MAX_WAITING_CAP
    return max(16, min(MAX_WAITING_CAP, soft // 4))


@attrs.define
class Server:
    state: DaemonState
    request_shutdown: Callable[[], None]
    keep_alive_seconds: float
    max_ws_message: int
    port: int = 0  # the listening port, for the Host check (set by ``serve``)
    max_waiting: int = MAX_WAITING_CAP
    reserve_fd: int | None = None  # freed to accept (and close) a newcomer when out of fds
    stopping: bool = False
    connections: set[ConnectionState] = attrs.field(factory=set)
    # Connections waiting for a request head, oldest first (dicts keep insertion order).
    waiting_anon: dict[ConnectionState, None] = attrs.field(factory=dict)
    waiting_trusted: dict[ConnectionState, None] = attrs.field(factory=dict)
    drained: trio.Event = attrs.field(factory=trio.Event)  # stopping and no connection left

    async def handle(self, sock: socket.socket) -> None:
        track = ConnectionState()
        self.connections.add(track)
        try:
            with track.scope:
                await HttpConnection(self, sock, track).run()
        except Exception:
            log.exception("unexpected error on an HTTP connection")
        finally:
            self.end_wait(track)
            self.connections.discard(track)
            trio.lowlevel.notify_closing(sock)
            sock.close()
            if self.stopping and not self.connections:
                self.drained.set()

    def begin_wait(self, track: ConnectionState) -> None:
        if self.stopping:
            track.scope.cancel()
        elif track.trusted:
            self.waiting_trusted[track] = None
        else:
            self.waiting_anon[track] = None
            if len(self.waiting_anon) > self.max_waiting:
                self.shed(1)

    def end_wait(self, track: ConnectionState) -> None:
        self.waiting_anon.pop(track, None)
        self.waiting_trusted.pop(track, None)

    def shed(self, count: int) -> int:
        """Drop up to ``count`` waiting connections, oldest anonymous ones first."""
        dropped = 0
        for waiting in (self.waiting_anon, self.waiting_trusted):
            while waiting and dropped < count:
                track = next(iter(waiting))
                del waiting[track]
                track.scope.cancel()
                dropped += 1
        return dropped

    async def sweep(self) -> None:
        """Drop connections whose head did not come in time (checked every second)."""
        while True:
            await trio.sleep(SWEEP_SECONDS)
            now = trio.current_time()
            for waiting in (self.waiting_anon, self.waiting_trusted):
                for track in [t for t in waiting if t.deadline <= now]:
                    del waiting[track]
                    track.scope.cancel()

    async def wait_drained(self) -> None:
        if self.connections:
            await self.drained.wait()

    def stop_idle(self) -> None:
        self.stopping = True
        self.shed(len(self.connections))
        for track in self.connections:
            if track.websocket is not None:
                track.websocket.cancel()


def _open_reserve() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None


async def _relieve_fd_pressure(server: Server, listener: socket.socket) -> None:
    """``accept`` ran out of descriptors: drop waiting connections to make room."""
    if server.shed(SHED_BATCH):
        # The dropped connections close their sockets when their tasks next run.
        for _ in range(3):
            await trio.lowlevel.checkpoint()
        return
    # Nothing to drop: free the reserve descriptor to take the newcomer off the queue and
    # close it, so that the queue keeps moving (later arrivals may find room).
    if server.reserve_fd is not None:
        os.close(server.reserve_fd)
    try:
        refused, _ = listener.accept()
        refused.close()
    except OSError:
        pass
    server.reserve_fd = _open_reserve()
    await trio.sleep(0.01)


async def accept_loop(server: Server, listener: socket.socket, nursery: trio.Nursery) -> None:
    while True:
        try:
            sock, _address = listener.accept()
        except BlockingIOError:
            await trio.lowlevel.wait_readable(listener)
            continue
        except OSError as exc:
            if exc.errno in FD_PRESSURE_ERRNOS:
                await _relieve_fd_pressure(server, listener)
                continue
            if exc.errno in ACCEPT_RETRY_ERRNOS:
                continue
            raise
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        nursery.start_soon(server.handle, sock)
        await trio.lowlevel.checkpoint()


async def serve(
    server: Server,
    listen_fd: int,
    shutdown: trio.Event,
    grace_seconds: float,
) -> None:
    """Accept and serve connections until ``shutdown`` is set, then stop as described above."""
    listener = socket.socket(fileno=listen_fd)
    listener.setblocking(False)
    server.port = listener.getsockname()[1]
    server.state.port = server.port  # for /stream URLs (streams.py)
    server.max_waiting = waiting_cap()
    if server.reserve_fd is None:
        server.reserve_fd = _open_reserve()
    async with trio.open_nursery() as connections:
        async with trio.open_nursery() as accepting:
            accepting.start_soon(accept_loop, server, listener, connections)
            accepting.start_soon(server.sweep)
            await shutdown.wait()
            accepting.cancel_scope.cancel()
        trio.lowlevel.notify_closing(listener)
        listener.close()
        server.stop_idle()
        with trio.move_on_after(grace_seconds):
            await server.wait_drained()
        connections.cancel_scope.cancel()
