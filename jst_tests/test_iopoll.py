"""The session's readiness set, in each of its forms (epoll, selectors, a task per socket)."""

from __future__ import annotations

import select
import selectors
import socket
from collections.abc import Callable, Iterator

import pytest
import trio

from jst.daemon import iopoll

Factory = Callable[[trio.Nursery], iopoll.Poller]


def _selector_poller(_nursery: trio.Nursery) -> iopoll.Poller:
    selector = selectors.DefaultSelector()
    if not hasattr(selector, "fileno"):
        selector.close()
        pytest.skip("no selector with a descriptor here")
    return iopoll.SelectorPoller(selector)


def _epoll_poller(_nursery: trio.Nursery) -> iopoll.Poller:
    if not hasattr(select, "epoll"):
        pytest.skip("epoll is Linux only")
    return iopoll.EpollPoller()


POLLERS = [
    pytest.param(_epoll_poller, id="epoll"),
    pytest.param(_selector_poller, id="selector"),
    pytest.param(iopoll.TaskPoller, id="task-per-socket"),
]


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    yield a, b
    a.close()
    b.close()


@pytest.mark.parametrize("make", POLLERS)
async def test_reports_readable_writable_and_nothing_after_unregister(
    make: Factory, pair: tuple[socket.socket, socket.socket]
) -> None:
    ours, peer = pair
    owner = object()
    async with trio.open_nursery() as nursery:
        poller = make(nursery)
        poller.register(ours, iopoll.READ, owner)
        with trio.move_on_after(0.1):
            await poller.wait()
            pytest.fail("readable with nothing sent")
        peer.send(b"x")
        with trio.fail_after(5):
            assert await poller.wait() == [(owner, iopoll.READ)]
        # level-triggered: still readable until read
        with trio.fail_after(5):
            assert await poller.wait() == [(owner, iopoll.READ)]
        assert ours.recv(10) == b"x"
        poller.modify(ours, iopoll.READ | iopoll.WRITE, owner)
        with trio.fail_after(5):
            assert await poller.wait() == [(owner, iopoll.WRITE)]
        poller.unregister(ours)
        peer.send(b"y")
        with trio.move_on_after(0.1):
            await poller.wait()
            pytest.fail("reported after unregister")
        poller.register(ours, iopoll.READ, owner)
        peer.close()  # EOF is readable too
        with trio.fail_after(5):
            assert await poller.wait() == [(owner, iopoll.READ)]
        poller.unregister(ours)
        poller.close()
        nursery.cancel_scope.cancel()
