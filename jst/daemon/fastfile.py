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

Writes where ``RWF_NOWAIT`` is refused (issue 13): a plain ``pwrite`` on the event loop,
as nginx and most servers do, but only where it cannot hang. A 16 KiB ``pwrite`` into
the page cache costs about 10 us; the hop to a thread and back cost about 150 us of
latency per request, which held 16 KiB writes on 4 connections at 2,400 req/s here (the
original: 9,850). A buffered write can still wait: for a page of the file read from disk
(a partial page not cached), for a full journal, or when the kernel throttles a writer
because too much of memory is dirty. So:

* only on local disk file systems (``fstatfs`` of the root: ext2/3/4, xfs, btrfs, f2fs,
  tmpfs, zfs, bcachefs, overlayfs), never on a network or FUSE mount, whose server may
  never answer;
* a write that took longer than ``INLINE_WRITE_STALL`` (the disk answered, not the page
  cache) sends that root's writes to threads for ``INLINE_WRITE_PAUSE`` seconds: under
  writeback pressure the loop pays for one slow write per pause, not for each.

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
import time
from functools import partial
from typing import Any

from jst.daemon import fileops, fsroot, openat2, statfs
from jst.daemon.paths import Target
from jst.daemon.threadhop import run_in_thread

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

# A page-cache write of 256 KiB takes well under 1 ms; one that took 5 ms waited for a
# disk (or for the kernel's dirty-page throttling), and the next ones likely will too.
INLINE_WRITE_STALL = 0.005
# How long a root that stalled the loop writes from threads before trying again: one
# stall per 30 s costs the loop at most ~0.7 % of its time even at the kernel's longest
# throttling pause (200 ms).
INLINE_WRITE_PAUSE = 30.0
# Per root folder: whether its file system may be written inline (None: find out), and
# until when (time.monotonic) it must not be, after a stall. Both bounded like the set.
_INLINE_WRITES: dict[str, bool] = {}
_INLINE_PAUSED_UNTIL: dict[str, float] = {}


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
    if offset + len(body) > fileops.OFF_T_MAX:
        return 0
    root = target.root
    nowait = root not in _NO_NOWAIT_WRITES
    if not nowait and not _may_write_inline(root):
        return 0
    fd = _open_cached(target, _WRITE_FLAGS)  # no O_CREAT: a new file takes the thread
    if fd is None:
        return 0
    try:
        if not stat_mod.S_ISREG(os.fstat(fd).st_mode):
            return 0
        if nowait:
            try:
                written: int = os.pwritev(fd, (body,), offset, _RWF_NOWAIT)
                return written
            except OSError as exc:
                if exc.errno != errno.EOPNOTSUPP:
                    return 0  # EAGAIN: it would wait; any error: the thread answers it
                # This file system cannot: do not ask again.
                _make_room(_NO_NOWAIT_WRITES)
                _NO_NOWAIT_WRITES.add(root)
                if not _may_write_inline(root):
                    return 0
        return _write_inline(root, fd, body, offset)
    except OSError:
        return 0  # e.g. ENOSPC: nothing was written; the thread gives the answer
    finally:
        os.close(fd)


def _make_room(table: set[str] | dict[str, Any]) -> None:
    """Per-root tables hold at most 64 roots (roots are few): full, it is emptied and
    what it held is learnt again."""
    if len(table) >= 64:
        table.clear()


def _may_write_inline(root: str) -> bool:
    """May ``root`` (whose file system refuses RWF_NOWAIT writes) be written on the loop?
    (Unknown yet: yes; ``_write_inline`` asks the file system first.)"""
    paused_until = _INLINE_PAUSED_UNTIL.get(root)
    if paused_until is not None:
        if time.monotonic() < paused_until:
            return False
        del _INLINE_PAUSED_UNTIL[root]
    return _INLINE_WRITES.get(root, True)


def _write_inline(root: str, fd: int, body: bytes | memoryview, offset: int) -> int:
    """One ``pwrite`` on the loop, on a local disk file system; 0 where it may not."""
    local = _INLINE_WRITES.get(root)
    if local is None:
        _make_room(_INLINE_WRITES)
        local = _INLINE_WRITES[root] = statfs.is_local_disk(fd)
    if not local:
        return 0
    start = time.monotonic()
    written: int = os.pwrite(fd, body, offset)
    end = time.monotonic()
    if end - start > INLINE_WRITE_STALL:
        _make_room(_INLINE_PAUSED_UNTIL)
        _INLINE_PAUSED_UNTIL[root] = end + INLINE_WRITE_PAUSE
    return written


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
    result: fileops.OpenFile = await run_in_thread(fileops.open_for_read, target)
    return result


async def read_range(target: Target, offset: int, length: int | None) -> bytes:
    """``fileops.read_range``, on the event loop when the page cache allows."""
    data = read_nowait(target, offset, length)
    if data is not None:
        return data
    result: bytes = await run_in_thread(fileops.read_range, target, offset, length)
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
    await run_in_thread(write, target, rest, offset + done, expected_sha1)
