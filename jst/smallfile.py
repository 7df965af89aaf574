"""Reading a small file that must be a regular file, without ever blocking.

The host reads its env file, and the host and the daemon read their generated-code
cache, before they answer anyone: a FIFO or a device put in such a file's place must
count as no file, not hold the start forever. So the file is opened with
``O_NONBLOCK`` (which changes nothing for a regular file), checked with ``fstat``, and
read only if it is a regular file within the size limit. Import-light: both readers
run before the host starts its daemon.
"""

from __future__ import annotations

import os
import stat


def read_regular(
    path: str | os.PathLike[str], limit: int, *, follow_symlinks: bool = True
) -> tuple[bytes, os.stat_result] | None:
    """``path``'s bytes and its ``fstat``; None if it is missing or unreadable, is not a
    regular file, or holds more than ``limit`` bytes."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        with open(fd, "rb", closefd=False) as file:
            data = file.read(limit + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return (data, info) if len(data) <= limit else None
