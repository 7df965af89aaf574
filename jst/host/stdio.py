"""Taking the browser's pipes away from the rest of the process (per platform).

Chrome talks to us over fds 0 and 1. ``take_stdio`` moves them to private descriptors
and points fd 0 at the null device and fd 1 at stderr, so that

* a stray ``print`` (ours or a library's) lands in the log, never inside a frame;
* child processes (the daemon, a folder dialog, ``xdg-open``) cannot inherit Chrome's
  pipes (§9.20): the private copies are not inheritable.

The returned streams are trio streams over those descriptors. On Unix, pipes, sockets
and terminals are polled by trio (``FdStream``); a regular file (``host < file``) and
Windows pipes are read and written from a worker thread instead.
"""

from __future__ import annotations

import os
import stat
import sys

import trio

READ_SIZE = 64 * 1024


def take_stdio() -> tuple[int, int]:
    """(input fd, output fd): private copies of the browser's stdin and stdout."""
    if sys.platform == "win32":
        import msvcrt

        # Binary mode: text mode would turn 0x0A inside a length prefix into CR LF.
        msvcrt.setmode(0, os.O_BINARY)
        msvcrt.setmode(1, os.O_BINARY)
    sys.stdout.flush()
    in_fd, out_fd = os.dup(0), os.dup(1)  # not inheritable (PEP 446)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    return in_fd, out_fd


def _pollable(fd: int) -> bool:
    if sys.platform == "win32":
        return False
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)


class _ThreadReader(trio.abc.ReceiveStream):
    def __init__(self, fd: int) -> None:
        self._fd = fd

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        # Abandoning the thread on cancel is fine: we only cancel when the host is ending.
        return await trio.to_thread.run_sync(
            os.read, self._fd, max_bytes or READ_SIZE, abandon_on_cancel=True
        )

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


class _ThreadWriter(trio.abc.SendStream):
    def __init__(self, fd: int) -> None:
        self._fd = fd

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.to_thread.run_sync(self._write_all, bytes(data))

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


def receive_stream(fd: int) -> trio.abc.ReceiveStream:
    if _pollable(fd):
        return trio.lowlevel.FdStream(fd)
    return _ThreadReader(fd)


def input_waiting(fd: int) -> bool:
    """Whether the browser has already written to us (Chrome sends its handshake as soon
    as it has started us). Regular files count as waiting; Windows pipes as not."""
    if sys.platform == "win32":
        return False
    import select

    try:
        readable, _, _ = select.select([fd], [], [], 0)
    except (OSError, ValueError):
        return False
    return bool(readable)


class FirstRead(trio.abc.ReceiveStream):
    """``stream``, with ``done`` set once its first ``receive_some`` has returned (or
    failed). The reader handles what it got before it next waits, so by the time another
    task sees ``done``, the first chunk's requests have been dispatched."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.done = trio.Event()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        try:
            return await self.stream.receive_some(max_bytes)
        finally:
            self.done.set()

    async def aclose(self) -> None:
        await self.stream.aclose()


def send_stream(fd: int) -> trio.abc.SendStream:
    if _pollable(fd):
        return trio.lowlevel.FdStream(fd)
    return _ThreadWriter(fd)
