"""The file routes' event-loop fast path (issue 13): no thread hop when nothing would wait.

A thread hop costs about 80 us of CPU here; a 16 KiB ``pread`` from the page cache costs
under 2 us. So ``read_range``/``write_at`` first try, on the event loop:

* ``openat2(AT_FDCWD, root, O_PATH, RESOLVE_CACHED)``: the root folder as it is now (a
  folder that went away is never used, however recently it answered), from the kernel's
  dentry cache only (``EAGAIN`` rather than waiting for a disk or a network server);
* ``openat2(root_fd, rel, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_CACHED)``
  (openat2.py): fails with ``EAGAIN`` rather than reading a folder from disk, with
  ``EXDEV`` rather than leaving the root;
* ``fstat``: a regular file, and for a read, the whole range present;
* ``preadv``/``pwritev`` with ``RWF_NOWAIT``: fails with ``EAGAIN`` rather than waiting
  for the disk (``EOPNOTSUPP`` for buffered writes on most file systems, ext4 and tmpfs
  included on Linux 6.18: remembered per root folder, so each root pays for it once).

Anything else, *including every error*, goes to a worker thread and fileops.py, which
gives the answer; so the fast path can only succeed or step aside and its semantics are
fileops.py's. Reads above ``NOWAIT_READ_LIMIT`` always take the thread: copying them
would hold the event loop for longer than the hop costs, and in a thread the copy runs
beside the loop on the other core.
"""

from __future__ import annotations

import errno
import os
import stat as stat_mod
from functools import partial

import trio

from jst.daemon import fileops, fsroot, openat2
from jst.daemon.paths import Target

# The engine reads and writes 16 KiB blocks; 256 KiB is still under ~30 us of copying.
NOWAIT_READ_LIMIT = NOWAIT_WRITE_LIMIT = 256 * 1024
# A body this small is hashed on the loop (as routes.py does for POST /hash/*).
INLINE_HASH_LIMIT = 64 * 1024

ENABLED = openat2.AVAILABLE and hasattr(os, "RWF_NOWAIT") and fsroot.supported()
_RWF_NOWAIT: int = getattr(os, "RWF_NOWAIT", 0)
# getattr: this module is imported on Windows too (ENABLED is False there).
_SAFE = sum(getattr(os, flag, 0) for flag in ("O_NONBLOCK", "O_NOCTTY", "O_CLOEXEC"))
_READ_FLAGS = os.O_RDONLY | _SAFE
_WRITE_FLAGS = os.O_WRONLY | _SAFE
_ROOT_FLAGS = getattr(os, "O_PATH", 0) | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
# Root folders whose file system answered EOPNOTSUPP to a RWF_NOWAIT write (roots are
# few; the set is emptied if it ever holds 64, and re-learnt).
_NO_NOWAIT_WRITES: set[str] = set()


def _open_cached(target: Target, flags: int) -> int | None:
    """Open without waiting for the disk, or None."""
    if not target.parts:
        return None
    try:
        # The root folder as it is *now* (a folder replaced since the last request is
        # never used), and the target beneath it, both from the dentry cache only.
        folder = os.fsencode(target.root)
        root_fd = openat2.openat2(
            openat2.AT_FDCWD, folder, _ROOT_FLAGS, resolve=openat2.RESOLVE_CACHED
        )
    except (OSError, UnicodeEncodeError):
        return None
    try:
        rel = os.fsencode("/".join(target.parts))
        return openat2.openat2(root_fd, rel, flags, resolve=openat2.BENEATH_CACHED)
    except OSError:
        return None
    finally:
        os.close(root_fd)


def read_nowait(target: Target, offset: int, length: int | None) -> bytes | None:
    """The bytes ``read_range`` would return, if the page cache has them all; else None."""
    if not ENABLED or offset > fileops.OFF_T_MAX:
        return None
    if length is not None and length > NOWAIT_READ_LIMIT:
        return None
    fd = _open_cached(target, _READ_FLAGS)
    if fd is None:
        return None
    try:
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):
            return None
        if length is None:
            length = max(st.st_size - offset, 0)
            if length > NOWAIT_READ_LIMIT:
                return None
        elif offset + length > st.st_size:
            return None  # short: the worker thread answers (500 early eof)
        buf = bytearray(length)
        if length and os.preadv(fd, (buf,), offset, _RWF_NOWAIT) != length:
            return None
        return bytes(buf)
    except OSError:  # EAGAIN: not all in the page cache
        return None
    finally:
        os.close(fd)


def write_nowait(target: Target, body: bytes | memoryview, offset: int) -> int:
    """Write what can be written without waiting; the count (0: nothing, try a thread)."""
    if not ENABLED or not body or len(body) > NOWAIT_WRITE_LIMIT:
        return 0
    if target.root in _NO_NOWAIT_WRITES or offset + len(body) > fileops.OFF_T_MAX:
        return 0
    fd = _open_cached(target, _WRITE_FLAGS)  # no O_CREAT: a new file takes the thread
    if fd is None:
        return 0
    try:
        if not stat_mod.S_ISREG(os.fstat(fd).st_mode):
            return 0
        written: int = os.pwritev(fd, (body,), offset, _RWF_NOWAIT)
        return written
    except OSError as exc:
        if exc.errno == errno.EOPNOTSUPP:  # this file system cannot: do not ask again
            if len(_NO_NOWAIT_WRITES) >= 64:
                _NO_NOWAIT_WRITES.clear()
            _NO_NOWAIT_WRITES.add(target.root)
        return 0
    finally:
        os.close(fd)


def open_nowait(target: Target) -> fileops.OpenFile | None:
    """``fileops.open_for_read`` if it can be done without waiting (and succeeds); else None."""
    if not ENABLED:
        return None
    fd = _open_cached(target, _READ_FLAGS)
    if fd is None:
        return None
    try:
        st = os.fstat(fd)
    except OSError:
        st = None
    if st is None or not stat_mod.S_ISREG(st.st_mode):
        os.close(fd)
        return None
    return fileops.OpenFile(fd, st.st_size, st.st_mtime_ns)


async def open_for_read(target: Target) -> fileops.OpenFile:
    """A regular file of a root, opened read-only, for ``os.sendfile`` and the like
    (``GET /stream``): on the event loop when nothing would wait, else in a thread.
    Raises the ``HttpError`` to answer with; the caller closes the file."""
    opened = open_nowait(target)
    if opened is not None:
        return opened
    result: fileops.OpenFile = await trio.to_thread.run_sync(fileops.open_for_read, target)
    return result


async def read_range(target: Target, offset: int, length: int | None) -> bytes:
    """``fileops.read_range``, on the event loop when the page cache allows."""
    data = read_nowait(target, offset, length)
    if data is not None:
        return data
    result: bytes = await trio.to_thread.run_sync(fileops.read_range, target, offset, length)
    return result


async def write_at(
    target: Target,
    body: bytes,
    offset: int,
    expected_sha1: str | None,
    *,
    storage_full: int | None = 507,
) -> None:
    """``fileops.write_at``, on the event loop when the file system allows."""
    if expected_sha1 is not None and len(body) <= INLINE_HASH_LIMIT:
        fileops.check_sha1(body, expected_sha1)
        expected_sha1 = None
    done = 0 if expected_sha1 is not None else write_nowait(target, body, offset)
    if done and done == len(body):
        return
    rest = memoryview(body)[done:]
    # Not abandoned on cancel: a write that started finishes before its task ends.
    write = partial(fileops.write_at, storage_full=storage_full)
    await trio.to_thread.run_sync(write, target, rest, offset + done, expected_sha1)
