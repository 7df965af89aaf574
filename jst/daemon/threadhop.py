"""A lean hop into a worker thread for blocking file work: ``await run_in_thread(fn, *args)``.

Why not ``trio.to_thread.run_sync``: per call it takes a capacity-limiter token, copies
the context, names the OS thread (a ``prctl`` system call) and hands the job over with a
lock per worker; for a 16 KiB ``pwrite`` that machinery cost more than the write. Here a
job is one ``SimpleQueue.put``; a worker runs it and hands the outcome back with
``run_sync_soon``, which wakes the event loop. Semantics kept from the old call:

* the calling task waits for the job even when cancelled (a write that started
  finishes before its task ends, so a closed connection never leaves a half-done
  operation running unseen); the cancellation is delivered when the job is done;
* exceptions raised by ``fn`` are re-raised in the caller;
* at most ``MAX_THREADS`` threads exist; more jobs queue. Threads idle for
  ``IDLE_SECONDS`` exit, so an idle daemon holds none.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import outcome
import trio

T = TypeVar("T")

# trio's default thread limit, kept: a few stuck calls (a dead network mount) must not
# stall every other file route sooner than they did before.
MAX_THREADS = 40
IDLE_SECONDS = 10.0

_Job = tuple[Callable[..., Any], tuple[Any, ...], trio.lowlevel.TrioToken, trio.lowlevel.Task]

_jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
_lock = threading.Lock()
_threads = 0
_idle = 0


def _worker() -> None:
    global _threads, _idle
    while True:
        try:
            fn, args, token, task = _jobs.get(timeout=IDLE_SECONDS)
        except queue.Empty:
            with _lock:
                # Exit only if no job slipped in while we timed out (else serve it).
                if _jobs.empty():
                    _threads -= 1
                    _idle -= 1
                    return
            continue
        with _lock:
            _idle -= 1
        result = outcome.capture(fn, *args)
        del fn, args
        with _lock:
            _idle += 1
        # RunFinishedError: the loop is gone; nobody waits for this outcome any more.
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(trio.lowlevel.reschedule, task, result)
        del task, result


def _start_thread_if_needed() -> None:
    global _threads, _idle
    with _lock:
        if _idle >= _jobs.qsize() or _threads >= MAX_THREADS:
            return
        _threads += 1
        _idle += 1
    threading.Thread(target=_worker, name="jst-file-io", daemon=True).start()


async def run_in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` in a worker thread; return its result or raise its exception."""
    await trio.lowlevel.checkpoint_if_cancelled()
    task = trio.lowlevel.current_task()
    _jobs.put((fn, args, trio.lowlevel.current_trio_token(), task))
    _start_thread_if_needed()

    def abort(_raise_cancel: Any) -> trio.lowlevel.Abort:
        return trio.lowlevel.Abort.FAILED  # the job runs to its end; see the module notes

    # The outcome handed to ``reschedule`` is unwrapped here: a value, or its exception.
    result: T = await trio.lowlevel.wait_task_rescheduled(abort)
    return result
