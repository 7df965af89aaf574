"""Download roots as the seed describes them: removable, reachable, when last checked.

``refresh`` is what a handshake or an endpoint request does to each root (in memory and
in the reply; the file keeps what was picked, since rewriting a profile's roots would
drop entries the parser kept verbatim): ``removable``
detected (Linux: a mount under ``/media`` or ``/run/media``, or a backing block device
whose ``removable`` flag is 1; macOS: under ``/Volumes``), ``last_stat_ok`` = the folder
is there, ``last_checked`` = now. ``control_root`` is the ``/control`` shape
(``{"key","uri","displayName","available"}``, SERVICE.md §3). Blocking (stat, /sys):
call from a worker thread.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import attrs

from jst.rpcinfo import DownloadRoot

REMOVABLE_MOUNTS = ("/media/", "/run/media/")


def _block_removable(path: str) -> bool:
    """Linux: the ``removable`` flag of the block device behind ``path`` (or its disk)."""
    try:
        dev = os.stat(path).st_dev
    except OSError:
        return False
    base = f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}"
    for candidate in (f"{base}/removable", f"{base}/../removable"):
        try:
            with open(candidate, encoding="ascii") as f:
                if f.read(8).strip() == "1":
                    return True
        except OSError:
            continue
    return False


def is_removable(path: str) -> bool:
    if sys.platform == "darwin":
        return path.startswith("/Volumes/")
    if sys.platform.startswith("linux"):
        return path.startswith(REMOVABLE_MOUNTS) or _block_removable(path)
    return False


def available(root: DownloadRoot) -> bool:
    return os.path.isdir(root.path)


def refresh(root: DownloadRoot) -> DownloadRoot:
    return attrs.evolve(
        root,
        removable=is_removable(root.path),
        last_stat_ok=available(root),
        last_checked=int(time.time() * 1000),
    )


def refresh_all(roots: list[DownloadRoot]) -> list[DownloadRoot]:
    return [refresh(root) for root in roots]


def control_root(root: DownloadRoot) -> dict[str, Any]:
    return {
        "key": root.key,
        "uri": root.path,
        "displayName": root.display_name,
        "available": root.last_stat_ok,
    }
