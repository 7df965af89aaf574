"""Per-call cost of the file routes' file work, beside raw ``os.pread``/``os.pwrite``.

``python -m jst_tests.bench.fileops``: no HTTP, no daemon; one file of 4 MiB three
folders below a root in a temporary directory. Each figure is the best of several rounds
(the machine is shared; the minimum is the least disturbed), in microseconds per call:

* ``raw pread``/``raw pwrite``: the physical reference (an open descriptor, no checks);
* ``fileops.*``: the blocking functions a worker thread runs (resolution included);
* ``route read``/``route write``: what a handler awaits (fastfile.py), sequentially on
  one trio loop: the event-loop fast path when it applies, else the thread hop.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Awaitable, Callable

import trio

from jst.daemon import fastfile, fileops
from jst.daemon.paths import resolve

KIB = 1024
ROUNDS = 5


def per_call(fn: Callable[[], object], n: int) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n * 1e6)
    return best


def per_await(fn: Callable[[], Awaitable[object]], n: int) -> tuple[float, float]:
    """(wall, CPU of this process) per awaited call, best round."""
    best = (float("inf"), float("inf"))

    async def rounds() -> None:
        nonlocal best
        for _ in range(ROUNDS):
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(n):
                await fn()
            here = ((time.perf_counter() - wall) / n * 1e6, (time.process_time() - cpu) / n * 1e6)
            best = min(best, here)

    trio.run(rounds)
    return best


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "root")
        os.makedirs(os.path.join(root, "a", "b"))
        path = os.path.join(root, "a", "b", "f")
        with open(path, "wb") as f:
            f.write(os.urandom(4 * KIB * KIB))
        fd = os.open(path, os.O_RDWR)
        block = os.urandom(16 * KIB)
        target = resolve(root, "a/b/f")
        rows: list[tuple[str, float, float | None]] = []
        raw_read = per_call(lambda: os.pread(fd, 16 * KIB, 64 * KIB), 20000)
        raw_write = per_call(lambda: os.pwrite(fd, block, 64 * KIB), 20000)
        rows.append(("raw pread 16 KiB", raw_read, None))
        rows.append(
            (
                "fileops.read_range 16 KiB",
                per_call(lambda: fileops.read_range(target, 64 * KIB, 16 * KIB), 5000),
                raw_read,
            )
        )
        rows.append(
            (
                "fastfile.read_nowait 16 KiB",
                per_call(lambda: fastfile.read_nowait(target, 64 * KIB, 16 * KIB), 5000),
                raw_read,
            )
        )
        wall, cpu = per_await(lambda: fastfile.read_range(target, 64 * KIB, 16 * KIB), 3000)
        rows.append(("route read 16 KiB (wall)", wall, raw_read))
        rows.append(("route read 16 KiB (CPU)", cpu, raw_read))
        rows.append(("raw pwrite 16 KiB", raw_write, None))
        rows.append(
            (
                "fileops.write_at 16 KiB",
                per_call(lambda: fileops.write_at(target, block, 64 * KIB, None), 5000),
                raw_write,
            )
        )
        wall, cpu = per_await(lambda: fastfile.write_at(target, block, 64 * KIB, None), 3000)
        rows.append(("route write 16 KiB (wall)", wall, raw_write))
        rows.append(("route write 16 KiB (CPU)", cpu, raw_write))
        rows.append(("fileops.stat", per_call(lambda: fileops.stat(target), 5000), None))
        os.close(fd)
        print(f"fast path enabled: {fastfile.ENABLED}")
        for name, micros, reference in rows:
            ratio = "" if reference is None else f"  x{micros / reference:.1f} of raw"
            print(f"{name:32s} {micros:8.2f} us{ratio}")


if __name__ == "__main__":
    main()
