"""Descriptor-relative resolution inside a download root (POSIX: Linux, macOS, BSDs).

Why: checking a path with ``realpath`` and then opening it by name leaves a window in
which a process that can write inside the root swaps a folder for a symlink and the open
lands outside (issue 12 item 3). Here resolution and use are one step:

* each root folder has one open directory descriptor (``RootTable``), re-opened when the
  folder's identity (device, inode) changes; a missing folder is ``RootUnavailable``;
* ``walk`` descends from that descriptor one component at a time with ``openat`` and
  ``O_NOFOLLOW``, keeping the chain of opened folders; the last component is handed, with
  the descriptor of its folder, to a callback that does the work (open, stat, unlink, ...)
  without following a symlink either. Nothing is ever re-resolved by name.
* Symlinks met on the way are followed *by us*: ``readlinkat``, then the target's
  components are walked from the link's folder (``..`` pops the chain; popping past the
  root is ``PathEscapesRoot``). An absolute target is accepted only if it names a place in
  the root (by the root's configured or real spelling, else by its ``realpath``), and is
  walked again from the root descriptor. So symlinks that stay inside are followed, as the
  README promises, and a swap at any moment yields either the old or the new inside-root
  object, or a 400, never an object outside.

Hard links are out of scope: a hard link in the root to a file outside *is* a file in
the root (the kernel cannot tell them apart); only the user can create one to a file the
daemon's user could not already reach otherwise.

``RootHandle.fd`` is shared by every thread and is never used for anything that depends
on its file offset (listing a folder opens a fresh descriptor of it). Handles are
reference-counted so that a re-opened or evicted root is closed only once unused.

Every operation checks the folder with one ``stat`` before using its handle, so a folder
that went away (an unplugged drive) is 404 at once, and one that came back is re-opened.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat as stat_mod
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import attrs

from jst.daemon import openat2
from jst.daemon.paths import PathEscapesRoot, RootUnavailable, Target

T = TypeVar("T")

O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
O_NOCTTY = getattr(os, "O_NOCTTY", 0)
O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
# Every open here: never follow the last component, never block (a FIFO, a device), never
# acquire a controlling terminal, never leak into a child.
SAFE_FLAGS = O_NOFOLLOW | os.O_NONBLOCK | O_NOCTTY | O_CLOEXEC if os.name == "posix" else 0
DIR_FLAGS = os.O_RDONLY | O_DIRECTORY | SAFE_FLAGS
# openat2 checks every step itself: it may follow the last component (inside the root).
_BENEATH_FLAGS = SAFE_FLAGS & ~O_NOFOLLOW

# Linux follows at most 40 symlinks in one lookup; so do we (then ELOOP, as the kernel).
MAX_SYMLINKS = 40
# Roots are few (the user picks them); old ones linger after a reload until evicted.
ROOT_CACHE_LIMIT = 32
# O_NOFOLLOW on a symlink fails with ELOOP (Linux, macOS) or EMLINK (FreeBSD); with
# O_DIRECTORY some systems say ENOTDIR first. Each of these may mean "a symlink here".
_SYMLINK_ERRNOS = frozenset({errno.ELOOP, errno.EMLINK, errno.ENOTDIR})
# Folders one walk may create: every component of the deepest path, and again for each
# symlink it may follow; bounds a walk that a racing process keeps deleting under it.
_MKDIR_LIMIT = 2 * (4096 // 2) + MAX_SYMLINKS


def supported() -> bool:
    """Can this OS do descriptor-relative resolution? (Windows cannot.)"""
    return (
        os.name == "posix"
        and bool(O_NOFOLLOW and O_DIRECTORY)
        and {os.open, os.stat, os.mkdir, os.unlink, os.rmdir, os.readlink} <= os.supports_dir_fd
        and os.scandir in os.supports_fd
    )


@attrs.define(eq=False)
class RootHandle:
    """An open descriptor of one root folder, shared by every request on that root."""

    folder: str
    fd: int
    ident: tuple[int, int]  # (st_dev, st_ino) of the folder when opened
    prefixes: tuple[str, ...]  # absolute spellings of the folder: as configured, and real
    users: int = 0
    retired: bool = False

    def relative(self, absolute: str) -> list[str] | None:
        """The components of an absolute symlink target below the root, or None."""
        below = _below(absolute, self.prefixes)
        if below is None:
            # Reached through a symlink outside the root (``~/dl -> /mnt/disk/dl``):
            # resolve by name only to learn where it points; the walk re-checks each step.
            below = _below(os.path.realpath(absolute), self.prefixes[-1:])
        return below


def _below(absolute: str, prefixes: tuple[str, ...]) -> list[str] | None:
    for prefix in prefixes:
        if absolute == prefix:
            return []
        folder = prefix.rstrip("/") + "/"
        if absolute.startswith(folder):
            return absolute[len(folder) :].split("/")
    return None


class RootTable:
    """The open root descriptors, by folder; safe to use from any thread."""

    def __init__(self, limit: int = ROOT_CACHE_LIMIT) -> None:
        self._lock = threading.Lock()
        self._handles: OrderedDict[str, RootHandle] = OrderedDict()
        self._limit = limit

    def acquire(self, folder: str) -> RootHandle:
        """The folder's handle, checked now (re-opened if the folder changed)."""
        try:
            st = os.stat(folder)
        except OSError:
            st = None
        if st is None or not stat_mod.S_ISDIR(st.st_mode):
            self.forget(folder)  # the event loop must not keep using it either
            raise RootUnavailable(folder)
        ident = (st.st_dev, st.st_ino)
        with self._lock:
            handle = self._handles.get(folder)
            if handle is not None and handle.ident == ident:
                handle.users += 1
                self._handles.move_to_end(folder)
                return handle
        fresh = _open_root(folder)
        with self._lock:
            old = self._handles.pop(folder, None)
            if old is not None:
                self._retire(old)
            self._handles[folder] = fresh
            while len(self._handles) > self._limit:
                _, evicted = self._handles.popitem(last=False)
                self._retire(evicted)
            fresh.users += 1
            return fresh

    def release(self, handle: RootHandle) -> None:
        with self._lock:
            handle.users -= 1
            if handle.retired and handle.users == 0:
                os.close(handle.fd)

    def forget(self, folder: str) -> None:
        """Drop the folder's handle (it failed in a way that suggests it went away)."""
        with self._lock:
            handle = self._handles.pop(folder, None)
            if handle is not None:
                self._retire(handle)

    def clear(self) -> None:
        with self._lock:
            while self._handles:
                self._retire(self._handles.popitem()[1])

    def _retire(self, handle: RootHandle) -> None:  # with self._lock held
        handle.retired = True
        if handle.users == 0:
            os.close(handle.fd)

    @contextmanager
    def root(self, folder: str) -> Iterator[RootHandle]:
        handle = self.acquire(folder)
        try:
            yield handle
        finally:
            self.release(handle)


def _open_root(folder: str) -> RootHandle:
    try:
        # The folder itself is configuration, trusted: its own path may hold symlinks.
        fd = os.open(folder, os.O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    except OSError:
        raise RootUnavailable(folder) from None
    try:
        st = os.fstat(fd)
        real = os.path.realpath(folder)
    except OSError:
        os.close(fd)
        raise RootUnavailable(folder) from None
    configured = os.path.normpath(os.path.abspath(folder))
    prefixes = (configured, real) if configured != real else (real,)
    return RootHandle(folder, fd, (st.st_dev, st.st_ino), prefixes)


ROOTS = RootTable()


def _readlink(dir_fd: int, name: str, cause: OSError) -> str:
    """The symlink's target, or ``cause`` re-raised when ``name`` is not a symlink."""
    try:
        return os.readlink(name, dir_fd=dir_fd)
    except OSError:
        raise cause from None


def walk(
    handle: RootHandle,
    parts: tuple[str, ...] | list[str],
    final: Callable[[int, str], T],
    *,
    follow_final: bool = True,
    make_dirs: bool = False,
) -> T:
    """Resolve ``parts`` below the root and return ``final(dir_fd, name)``.

    ``final`` acts on ``name`` inside the folder ``dir_fd`` without following a symlink
    (``O_NOFOLLOW``, ``follow_symlinks=False``) and raises ``OSError(ELOOP)`` when it
    finds one; with ``follow_final`` the walk then follows that link and calls ``final``
    again at its target. ``name`` is ``"."`` when the target is a folder reached without
    a last name (the root itself, a link to ``..``). ``make_dirs`` creates missing
    intermediate folders (mode 0777 minus umask, as ``os.makedirs``).

    Raises ``PathEscapesRoot``, or the ``OSError`` of the step that failed.
    """
    pending = list(reversed(parts))  # a stack: the next component is at the end
    chain: list[int] = []  # owned descriptors of the folders below the root, in order
    links = 0
    mkdirs = 0
    try:
        while True:
            here = chain[-1] if chain else handle.fd
            if not pending:
                return final(here, ".")
            name = pending.pop()
            if name in ("", "."):
                continue
            if name == "..":
                if not chain:
                    raise PathEscapesRoot()
                os.close(chain.pop())
                continue
            try:
                if not pending:
                    return final(here, name)
                chain.append(os.open(name, DIR_FLAGS, dir_fd=here))
                continue
            except FileNotFoundError:
                if not (make_dirs and pending) or mkdirs >= _MKDIR_LIMIT:
                    raise
                mkdirs += 1
                # Exists meanwhile (a racing mkdir, a dangling symlink): the retry tells.
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o777, dir_fd=here)
                pending.append(name)
                continue
            except OSError as exc:
                if exc.errno not in _SYMLINK_ERRNOS or (not pending and not follow_final):
                    raise
                target = _readlink(here, name, exc)
            links += 1
            if links > MAX_SYMLINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
            if target.startswith("/"):
                below = handle.relative(target)
                if below is None:
                    raise PathEscapesRoot()
                while chain:
                    os.close(chain.pop())
                pending.extend(reversed(below))
            else:
                pending.extend(reversed(target.split("/")))
    finally:
        for fd in chain:
            os.close(fd)


# --- the operations fileops.py builds on -------------------------------------------------


def open_file(target: Target, flags: int, *, make_dirs: bool = False, mode: int = 0o666) -> int:
    """Open the target (following symlinks that stay inside) with ``flags``; the caller
    checks what it opened with ``fstat`` (the open never blocks: ``O_NONBLOCK``).

    On Linux one ``openat2(RESOLVE_BENEATH)`` does the common case in one syscall; any
    failure of it (an absolute symlink, an escape, a missing folder) is decided by the
    walk, so both give the same answers."""
    with ROOTS.root(target.root) as handle:
        if openat2.AVAILABLE and target.parts:
            how_mode = mode if flags & os.O_CREAT else 0
            try:
                rel = os.fsencode("/".join(target.parts))
                how_flags = flags | _BENEATH_FLAGS
                return openat2.openat2(handle.fd, rel, how_flags, how_mode, resolve=openat2.BENEATH)
            except OSError:
                pass
        return walk(
            handle,
            target.parts,
            lambda dir_fd, name: os.open(name, flags | SAFE_FLAGS, mode, dir_fd=dir_fd),
            make_dirs=make_dirs,
        )


def make_dirs(target: Target) -> None:
    """mkdir -p of the target below its root (the root folder itself must exist)."""

    def final(dir_fd: int, name: str) -> None:
        try:
            os.mkdir(name, 0o777, dir_fd=dir_fd)
            return
        except FileExistsError:
            pass
        # Exists: fine if it is a folder (or a symlink to one inside: ELOOP -> followed).
        os.close(os.open(name, DIR_FLAGS, dir_fd=dir_fd))

    with ROOTS.root(target.root) as handle:
        walk(handle, target.parts, final, make_dirs=True)


def stat(target: Target) -> os.stat_result:
    """``stat`` following symlinks that stay inside the root."""

    def final(dir_fd: int, name: str) -> os.stat_result:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat_mod.S_ISLNK(st.st_mode):
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))  # follow it
        return st

    with ROOTS.root(target.root) as handle:
        return walk(handle, target.parts, final)


def list_names(target: Target) -> list[str]:
    """The names in the target folder (as ``os.listdir``: str, surrogate-escaped)."""

    def final(dir_fd: int, name: str) -> list[str]:
        fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
        try:
            return os.listdir(fd)
        finally:
            os.close(fd)

    with ROOTS.root(target.root) as handle:
        return walk(handle, target.parts, final)


def remove(target: Target) -> None:
    """Delete the target itself: a file, a symlink (never its target), a whole tree
    (``remove_tree``: it never follows a symlink either)."""

    def final(dir_fd: int, name: str) -> None:
        if name == ".":  # only the root is reached without a name
            raise PathEscapesRoot()
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat_mod.S_ISDIR(st.st_mode):
            remove_tree(dir_fd, name)
        else:
            os.unlink(name, dir_fd=dir_fd)

    with ROOTS.root(target.root) as handle:
        walk(handle, target.parts, final, follow_final=False)


# A tree is removed holding at most this many folder descriptors; deeper, the ancestors'
# are closed and re-opened through ".." on the way back up, each checked by identity.
TREE_FD_WINDOW = 32


@attrs.define
class _Level:
    fd: int | None  # None: closed to stay within TREE_FD_WINDOW
    name: str  # its name in the level above
    ident: tuple[int, int]
    entries: Iterator[tuple[str, bool]]  # (name, is a folder), listed once


def _entries(fd: int) -> Iterator[tuple[str, bool]]:
    with os.scandir(fd) as scan:
        listed = [(e.name, e.is_dir(follow_symlinks=False)) for e in scan]
    return iter(listed)


def _open_level(dir_fd: int, name: str) -> _Level:
    fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        return _Level(fd, name, (st.st_dev, st.st_ino), _entries(fd))
    except OSError:
        os.close(fd)
        raise


def remove_tree(parent_fd: int, name: str) -> None:
    """``rm -r`` of the folder ``name`` in ``parent_fd``, descriptor by descriptor.

    Unlike ``shutil.rmtree`` (Python 3.11): every folder is opened with ``O_NOFOLLOW |
    O_DIRECTORY | O_NONBLOCK`` (a symlink or FIFO swapped in is unlinked, never entered or
    waited on), no recursion (a 1,024-deep tree is fine), bounded descriptors. An entry
    that vanishes meanwhile is skipped; a folder moved away during the walk stops it.
    """
    levels = [_open_level(parent_fd, name)]
    try:
        while levels:
            level = levels[-1]
            assert level.fd is not None
            for entry, is_dir in level.entries:
                try:
                    if is_dir:
                        levels.append(_open_level(level.fd, entry))
                        break
                    os.unlink(entry, dir_fd=level.fd)
                except FileNotFoundError:
                    continue
                except IsADirectoryError:  # became a folder since the listing
                    levels.append(_open_level(level.fd, entry))
                    break
                except OSError as exc:  # became a symlink, a file, a FIFO: not entered
                    if exc.errno not in _SYMLINK_ERRNOS:
                        raise
                    os.unlink(entry, dir_fd=level.fd)
            else:
                _leave(levels, parent_fd)
                continue
            _bound_descriptors(levels)
    finally:
        for level in levels:
            if level.fd is not None:
                os.close(level.fd)


def _leave(levels: list[_Level], parent_fd: int) -> None:
    """The top level is empty: remove it from the level above (re-opened if needed)."""
    level = levels.pop()
    assert level.fd is not None
    try:
        if levels and levels[-1].fd is None:
            above = levels[-1]
            fd = os.open("..", DIR_FLAGS, dir_fd=level.fd)
            st = os.fstat(fd)
            above.fd = fd
            if (st.st_dev, st.st_ino) != above.ident:
                raise OSError(errno.ESTALE, "a folder was moved while its tree was removed")
    finally:
        os.close(level.fd)
    above_fd = levels[-1].fd if levels else parent_fd
    assert above_fd is not None
    os.rmdir(level.name, dir_fd=above_fd)


def _bound_descriptors(levels: list[_Level]) -> None:
    open_levels = [level for level in levels if level.fd is not None]
    for level in open_levels[: max(len(open_levels) - TREE_FD_WINDOW, 0)]:
        assert level.fd is not None
        os.close(level.fd)
        level.fd = None
