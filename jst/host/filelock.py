"""An advisory lock on a file, held across one read-modify-write of ``rpc-info.json``.

Several hosts run at once (one per Chrome profile) and update the same file; without a
lock two of them can read the same version and one update is lost (§9.17). The lock is
a separate file (``rpc-info.json.lock``) that is never deleted, so there is no window in
which two processes lock two different inodes.

Unix: ``flock``; released by the kernel when the process dies, even by SIGKILL.
Windows: ``msvcrt.locking`` on the first byte; also released when the process dies.
Both are polled without blocking so that a holder that is stopped (SIGSTOP, a debugger)
costs a bounded wait and a clear error, not a hung host.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# A locked update takes a few milliseconds; 5 s means another process is stuck.
LOCK_TIMEOUT = 5.0
POLL_INTERVAL = 0.005


class LockTimeout(OSError):
    pass


if sys.platform == "win32":
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


@contextmanager
def locked(path: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created 0600 if missing). Blocking: use a thread."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while not _try_lock(fd):
            if time.monotonic() > deadline:
                raise LockTimeout(f"{path} is held by another process for over {timeout:g} s")
            time.sleep(POLL_INTERVAL)
        try:
            yield
        finally:
            _unlock(fd)
    finally:
        os.close(fd)
