"""Name-based resolution for systems without ``openat``/``O_NOFOLLOW`` (Windows).

The same five operations as fsroot.py, with the check jst 0.2 made everywhere: the root
folder must exist, and the ``realpath`` of the target (of its parent, for a delete) must
lie inside the ``realpath`` of the root. That check and the use are two steps, so a
process that can write inside the root and races the daemon could still redirect one
operation (creating symlinks on Windows needs a privilege or developer mode). The README
says so; POSIX systems never use this module.
"""

from __future__ import annotations

import os
import shutil
import stat as stat_mod

from jst.daemon.paths import PathEscapesRoot, RootUnavailable, Target, is_within

O_BINARY = getattr(os, "O_BINARY", 0)  # no newline translation
O_NOINHERIT = getattr(os, "O_NOINHERIT", 0)
# Where the OS has them (not Windows): a FIFO or device is opened without blocking.
O_NONBLOCK = getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)


def _check(target: Target, *, follow_final: bool = True) -> None:
    if not os.path.isdir(target.root):
        raise RootUnavailable(target.root)
    if not target.parts:
        return
    real_root = os.path.realpath(target.root)
    if follow_final:
        real = os.path.realpath(target.path)
    else:
        real = os.path.join(os.path.realpath(os.path.dirname(target.path)), target.parts[-1])
    if not is_within(real, real_root):
        raise PathEscapesRoot()


def open_file(target: Target, flags: int, *, make_dirs: bool = False, mode: int = 0o666) -> int:
    _check(target)
    flags |= O_BINARY | O_NOINHERIT | O_NONBLOCK
    try:
        return os.open(target.path, flags, mode)
    except FileNotFoundError:
        if not make_dirs:
            raise
    os.makedirs(os.path.dirname(target.path), exist_ok=True)
    return os.open(target.path, flags, mode)


def make_dirs(target: Target) -> None:
    _check(target)
    os.makedirs(target.path, exist_ok=True)


def stat(target: Target) -> os.stat_result:
    _check(target)
    return os.stat(target.path)


def list_names(target: Target) -> list[str]:
    _check(target)
    return os.listdir(target.path)


def remove(target: Target) -> None:
    if not target.parts:
        raise PathEscapesRoot()
    _check(target, follow_final=False)
    st = os.lstat(target.path)
    if stat_mod.S_ISDIR(st.st_mode):
        shutil.rmtree(target.path)
    else:
        os.unlink(target.path)
