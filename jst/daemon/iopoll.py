"""One readiness set per ``/io`` session: which of its plain TCP sockets can be read or written.

Why not a trio task per socket (as before 0.3): a task, its coroutine frames and its
cancel scopes cost about 7 KiB per socket, a wake-up per message costs two task
switches, and the garbage collector walked every one of them on each collection, so the
cost per message grew with the number of sockets (issue 18). Here a session registers
each socket once in an OS readiness set (epoll on Linux, kqueue on macOS and the BSDs
through ``selectors``), and one task waits for the set itself to become readable with
``trio.lowlevel.wait_readable``; then a non-blocking ``select(0)`` says which sockets are
ready. The set is level-triggered: a socket left unread reports again on the next call,
which is how the reactor pauses when the WebSocket is slow.

Where the selector has no descriptor trio could wait on (Windows' ``select``), a task
per registration waits for that socket instead (``TaskPoller``): the old costs, the same
behaviour.
"""

from __future__ import annotations

import contextlib
import select
import selectors
import socket
from typing import Any, Protocol

import trio

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE
if hasattr(select, "epoll"):
    _READABLE = select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR | select.EPOLLRDHUP
    _WRITABLE = select.EPOLLOUT | select.EPOLLERR


class Poller(Protocol):
    def register(self, sock: socket.socket, events: int, owner: Any) -> None: ...
    def modify(self, sock: socket.socket, events: int, owner: Any) -> None: ...
    def unregister(self, sock: socket.socket) -> None: ...
    async def wait(self) -> list[tuple[Any, int]]: ...
    def close(self) -> None: ...


# At most this many ready sockets per wake-up; the rest are reported on the next one
# (level-triggered), so one wake-up never allocates for every registered socket.
MAX_EVENTS = 1024


class EpollPoller:
    """Linux: ``select.epoll`` directly (no per-socket key objects, a bounded batch)."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._fd = self._epoll.fileno()
        self._owners: dict[int, Any] = {}

    @staticmethod
    def _mask(events: int) -> int:
        return (select.EPOLLIN if events & READ else 0) | (select.EPOLLOUT if events & WRITE else 0)

    def register(self, sock: socket.socket, events: int, owner: Any) -> None:
        fd = sock.fileno()
        self._epoll.register(fd, self._mask(events))
        self._owners[fd] = owner

    def modify(self, sock: socket.socket, events: int, owner: Any) -> None:
        fd = sock.fileno()
        self._epoll.modify(fd, self._mask(events))
        self._owners[fd] = owner

    def unregister(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        if self._owners.pop(fd, None) is not None:
            with contextlib.suppress(OSError):
                self._epoll.unregister(fd)

    async def wait(self) -> list[tuple[Any, int]]:
        owners = self._owners
        while True:
            ready = self._epoll.poll(0, MAX_EVENTS)
            if ready:
                # An error or hang-up is reported as readable: the read sees it.
                return [
                    (
                        owners[fd],
                        (READ if flags & _READABLE else 0) | (WRITE if flags & _WRITABLE else 0),
                    )
                    for fd, flags in ready
                    if fd in owners
                ]
            await trio.lowlevel.wait_readable(self._fd)

    def close(self) -> None:
        self._epoll.close()


class SelectorPoller:
    """A ``selectors`` set whose own descriptor trio can wait on (epoll, kqueue)."""

    def __init__(self, selector: selectors.BaseSelector) -> None:
        self._selector = selector
        self._fd: int = selector.fileno()  # type: ignore[attr-defined]

    def register(self, sock: socket.socket, events: int, owner: Any) -> None:
        self._selector.register(sock, events, owner)

    def modify(self, sock: socket.socket, events: int, owner: Any) -> None:
        self._selector.modify(sock, events, owner)

    def unregister(self, sock: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(sock)  # never registered, or already closed: fine

    async def wait(self) -> list[tuple[Any, int]]:
        while True:
            ready = self._selector.select(0)
            if ready:
                return [(key.data, events) for key, events in ready]
            await trio.lowlevel.wait_readable(self._fd)

    def close(self) -> None:
        self._selector.close()


class TaskPoller:
    """The fallback: one waiting task per registered socket and direction."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._scopes: dict[int, list[trio.CancelScope]] = {}
        self._ready: dict[int, tuple[Any, int]] = {}
        self._wake = trio.Event()
        self._round = trio.Event()

    def register(self, sock: socket.socket, events: int, owner: Any) -> None:
        self.unregister(sock)
        scopes = self._scopes[sock.fileno()] = []
        for event in (READ, WRITE):
            if events & event:
                scope = trio.CancelScope()
                scopes.append(scope)
                self._nursery.start_soon(self._watch, scope, sock, event, owner)

    modify = register

    def unregister(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        scopes = self._scopes.pop(fd, [])
        for scope in scopes:
            scope.cancel()
        if scopes:
            # Wake the cancelled watchers now, not at their next turn: the caller may
            # close the socket (or watch it again) before that turn comes.
            trio.lowlevel.notify_closing(sock)
        self._ready.pop(fd, None)

    async def _watch(
        self, scope: trio.CancelScope, sock: socket.socket, event: int, owner: Any
    ) -> None:
        with scope:
            while True:
                try:
                    if event == READ:
                        await trio.lowlevel.wait_readable(sock)
                    else:
                        await trio.lowlevel.wait_writable(sock)
                except (trio.ClosedResourceError, ValueError, OSError):
                    return  # unregistered (see unregister), or closed before we ran
                except trio.BusyResourceError:
                    # The watcher this one replaces (modify) is cancelled but has not
                    # unwound yet; it will have by the next scheduling round.
                    await trio.sleep(0.001)
                    continue
                fd = sock.fileno()
                _, seen = self._ready.get(fd, (owner, 0))
                self._ready[fd] = (owner, seen | event)
                self._wake.set()
                # Level-triggered like a selector: report again once the reactor has
                # taken this report (and maybe read), not in a busy loop.
                await self._round.wait()

    async def wait(self) -> list[tuple[Any, int]]:
        while not self._ready:
            self._wake = trio.Event()
            await self._wake.wait()
        ready = list(self._ready.values())
        self._ready.clear()
        self._round.set()
        self._round = trio.Event()
        return ready

    def close(self) -> None:
        for scopes in self._scopes.values():
            for scope in scopes:
                scope.cancel()
        self._scopes.clear()


def open_poller(nursery: trio.Nursery) -> Poller:
    if hasattr(select, "epoll"):
        return EpollPoller()
    selector = selectors.DefaultSelector()
    if hasattr(selector, "fileno"):
        return SelectorPoller(selector)
    selector.close()
    return TaskPoller(nursery)
