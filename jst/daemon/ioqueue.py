"""What every part of one ``/io`` session shares: the outbound queue and the counters.

``Outbox`` replaces a trio memory channel because the session's socket reactor
(``iotcp``) produces frames from synchronous code, many per wake-up: it must be able to
queue without a checkpoint, and to ask "is there room?" before it reads more from the
sockets. The bound is in bytes, not frames, so a slow WebSocket holds at most
``OUTBOX_LIMIT`` plus one read of data (§6.11, §9.9); TCP flow control pushes back on
the peers while the reactor waits for room.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import attrs
import trio

from jst.daemon.state import Stats

# Bytes queued for the WebSocket before producers wait: the old bound of 64 frames of
# 128 KiB, now counted in bytes, so 10,000 small frames do not wait behind 64.
OUTBOX_LIMIT = 8 * 1024 * 1024
# ``send_now`` hands at most this much to the socket itself; more is the writer's, whose
# vectored writes do not copy large frames (the echo replies this is for are tiny).
SEND_NOW_LIMIT = 64 * 1024


class Framed(bytes):
    """Bytes already framed for the WebSocket (the unsent end of a ``send_now``): the
    writer sends them as they are, before anything queued after them."""


# Writes messages to the socket at once if it can; returns the framed bytes it could
# not write (None: all written, or the connection is gone).
DirectSend = Callable[[list[bytes]], "bytes | None"]


class Outbox:
    """A FIFO of outbound frames (``bytes``) and close requests (``int`` close codes)."""

    def __init__(self, limit: int = OUTBOX_LIMIT) -> None:
        self._items: deque[bytes | int] = deque()
        self._size = 0
        self._limit = limit
        self._has_items = trio.Event()
        self._has_space = trio.Event()
        self._has_space.set()
        self._writer_idle = False  # the writer waits in ``take`` with nothing queued
        self.direct: DirectSend | None = None

    @property
    def full(self) -> bool:
        return self._size >= self._limit

    def put_nowait(self, item: bytes | int) -> None:
        """Queue now, room or not: for producers that checked ``full`` (or hold one frame)."""
        self._items.append(item)
        if not isinstance(item, int):
            self._size += len(item)
        self._has_items.set()

    async def put(self, item: bytes | int) -> None:
        """Queue once there is room (a checkpoint only when there is none)."""
        if self._size >= self._limit:
            await self.wait_space()
        self.put_nowait(item)

    async def wait_space(self) -> None:
        while self._size >= self._limit:
            if self._has_space.is_set():
                self._has_space = trio.Event()
            await self._has_space.wait()

    async def take(self, max_bytes: int) -> list[bytes | int]:
        """What is queued, oldest first, up to about ``max_bytes`` (waits for one item)."""
        items = self._items
        while not items:
            self._has_items = trio.Event()
            self._writer_idle = True
            try:
                await self._has_items.wait()
            finally:
                self._writer_idle = False
        batch: list[bytes | int] = []
        size = 0
        while items and size < max_bytes:
            item = items.popleft()
            batch.append(item)
            if not isinstance(item, int):
                size += len(item)
        self._size -= size
        if self._size < self._limit:
            self._has_space.set()
        return batch

    def send_now(self) -> None:
        """Write what is queued straight to the socket, if the writer is idle (so nothing
        is in flight before it) and it is small: a producer that queued a reply saves the
        writer's wake-up, a round of the scheduler, on the reply's way out (echo latency).
        What the socket does not take goes back to the queue, framed, in order."""
        if not self._writer_idle or self.direct is None or not 0 < self._size <= SEND_NOW_LIMIT:
            return
        items = self._items
        messages: list[bytes] = []
        for item in items:
            if isinstance(item, (int, Framed)):
                return  # a close request, or bytes in flight: the writer's business
            messages.append(item)
        items.clear()
        self._size = 0
        self._has_space.set()
        rest = self.direct(messages)
        if rest:
            self.put_nowait(Framed(rest))


@attrs.define(eq=False)
class SessionIO:
    """The handles a session's socket tables need: counters, nursery, outbound queue."""

    stats: Stats
    nursery: trio.Nursery
    outbox: Outbox
