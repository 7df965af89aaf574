"""The ``/io`` session's outbound queue (ioqueue.Outbox): what ``send_now`` may write
itself, and that nothing it cannot write is lost or overtaken."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import trio
import trio.testing

from jst.daemon.ioqueue import SEND_NOW_LIMIT, Framed, Outbox


class Socket:
    """Stands in for ``WebSocket.send_now``: takes ``room`` bytes of the framed data
    (here each message framed as b"<" + message + b">"), returns the rest."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.written = b""

    def send_now(self, messages: list[bytes]) -> bytes | None:
        data = b"".join(b"<" + m + b">" for m in messages)
        taken, rest = data[: self.room], data[self.room :]
        self.room -= len(taken)
        self.written += taken
        return rest or None


@contextlib.asynccontextmanager
async def idle_writer(socket: Socket) -> AsyncIterator[tuple[Outbox, list[list[bytes | int]]]]:
    """An outbox whose writer waits in ``take`` with nothing queued (so ``send_now``
    may write); the one batch the writer then takes is in the list, once the block ends."""
    outbox = Outbox()
    outbox.direct = socket.send_now
    taken: list[list[bytes | int]] = []

    async def writer() -> None:
        taken.append(await outbox.take(1 << 30))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        await trio.testing.wait_all_tasks_blocked()
        yield outbox, taken


async def test_an_idle_writer_lets_small_frames_go_out_at_once() -> None:
    socket = Socket(room=1000)
    async with idle_writer(socket) as (outbox, taken):
        outbox.put_nowait(b"a")
        outbox.put_nowait(b"b")
        outbox.send_now()
        assert socket.written == b"<a><b>"
        assert not outbox.full
        # The writer was woken by the first put; it finds nothing and waits again.
        await trio.testing.wait_all_tasks_blocked()
        assert taken == []
        outbox.put_nowait(b"c")  # later frames still reach the writer as usual
    assert taken == [[b"c"]]


async def test_what_the_socket_does_not_take_goes_first_framed() -> None:
    socket = Socket(room=4)
    async with idle_writer(socket) as (outbox, taken):
        outbox.put_nowait(b"ab")
        outbox.put_nowait(b"cd")
        outbox.send_now()
        outbox.put_nowait(b"ef")  # queued after: goes after the unsent rest
    assert socket.written == b"<ab>"
    assert taken == [[b"<cd>", b"ef"]]
    assert isinstance(taken[0][0], Framed)


async def test_nothing_is_written_past_a_busy_writer_a_close_or_the_size_limit() -> None:
    socket = Socket(room=1 << 30)
    busy = Outbox()  # no task waits in take: the writer may be mid-send
    busy.direct = socket.send_now
    busy.put_nowait(b"x")
    busy.send_now()
    assert socket.written == b""
    cases: list[list[bytes | int]] = [
        [b"y", 1000],  # a close request is the writer's
        [b"z" * (SEND_NOW_LIMIT + 1)],  # large frames go out vectored, by the writer
        [Framed(b"<w>"), b"v"],  # bytes in flight: nothing may overtake them
    ]
    for queued in cases:
        async with idle_writer(socket) as (outbox, taken):
            for item in queued:
                outbox.put_nowait(item)
            outbox.send_now()
        assert socket.written == b"", queued
        assert taken == [queued]
