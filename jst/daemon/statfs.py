"""Is a file on a local disk file system? ``fstatfs(2)`` through ctypes (Linux only).

fastfile.py writes small bodies on the event loop only where a ``pwrite`` cannot hang
on a server that stopped answering: on the file systems below. Anything else (NFS, SMB,
FUSE, 9p, an unknown type, another OS, a failed call) answers False, and its writes keep
their worker thread.
"""

from __future__ import annotations

import ctypes
import sys

# f_type magic numbers (linux/magic.h and the file systems' own headers).
LOCAL_DISK_TYPES = frozenset(
    {
        0xEF53,  # ext2, ext3, ext4
        0x58465342,  # xfs
        0x9123683E,  # btrfs
        0xF2F52010,  # f2fs
        0x01021994,  # tmpfs
        0x2FC12FC1,  # zfs
        0xCA451A4E,  # bcachefs
        0x794C7630,  # overlayfs (a container's root; its layers are local)
    }
)

# struct statfs begins with ``__fsword_t f_type`` (a C long on Linux's 64- and 32-bit
# ABIs alike); the whole struct is at most 120 bytes. 256 leaves room.
_BUFFER_SIZE = 256


def _load() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).fstatfs
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_int
    fn.argtypes = (ctypes.c_int, ctypes.c_void_p)
    return fn


_fstatfs = _load()


def fs_type(fd: int) -> int | None:
    """The file system type (``f_type``) of the open file ``fd``, or None."""
    if _fstatfs is None:
        return None
    buf = ctypes.create_string_buffer(_BUFFER_SIZE)
    if _fstatfs(fd, buf) != 0:
        return None
    return ctypes.c_ulong.from_buffer(buf).value & 0xFFFFFFFF


def is_local_disk(fd: int) -> bool:
    return fs_type(fd) in LOCAL_DISK_TYPES
