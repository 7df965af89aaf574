"""The daemon's hop into worker threads (jst/daemon/threadhop.py)."""

from __future__ import annotations

import threading
import time

import pytest
import trio

from jst.daemon import threadhop


async def test_result_and_exception_come_back_from_another_thread() -> None:
    main = threading.get_ident()
    total, ident = await threadhop.run_in_thread(lambda a, b: (a + b, threading.get_ident()), 1, 2)
    assert (total, ident != main) == (3, True)
    with pytest.raises(ZeroDivisionError):
        await threadhop.run_in_thread(lambda: 1 / 0)


async def test_many_jobs_at_once_all_finish_with_bounded_threads() -> None:
    results: list[int] = []

    def job(i: int) -> int:
        time.sleep(0.01)
        return i

    async def one(i: int) -> None:
        results.append(await threadhop.run_in_thread(job, i))

    async with trio.open_nursery() as nursery:
        for i in range(50):
            nursery.start_soon(one, i)
    assert sorted(results) == list(range(50))
    assert threadhop._threads <= threadhop.MAX_THREADS


async def test_a_cancelled_caller_still_waits_for_its_job() -> None:
    done = threading.Event()

    def slow() -> None:
        time.sleep(0.3)
        done.set()

    with trio.move_on_after(0.05) as scope:
        await threadhop.run_in_thread(slow)
    # The job was not abandoned: it had finished before the caller went on.
    assert done.is_set()
    assert scope.cancelled_caught or scope.cancel_called
