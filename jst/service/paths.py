"""Where the service lives: ``<runtime dir>/jstorrent-native/`` (SERVICE.md §1).

The runtime dir is ``$XDG_RUNTIME_DIR`` (per user, 0700, made by the login session),
else a per-user directory we create in the temp dir. Either way the ``jstorrent-native``
directory inside it is ours, 0700, and checked before use: a directory owned by someone
else or reachable by others is refused, since whoever can connect to ``service.sock``
gets daemon tokens. Both the one-shot host and a service started by systemd compute the
same path (SERVICE.md §6 "Environment").

Imports nothing heavy: the one-shot host uses this module before anything else.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

DIR_NAME = "jstorrent-native"
SOCKET_NAME = "service.sock"
LOCK_NAME = "service.lock"  # held by the running service for its whole life
SPAWN_LOCK_NAME = "spawn.lock"  # held by a one-shot host while it starts a service
LINK_SOCKET_NAME = "link.sock"
# sun_path is 108 bytes on Linux, 104 on macOS.
MAX_UNIX_PATH = 100


class RuntimeDirError(OSError):
    """The runtime directory cannot be made private to this user."""


def runtime_base() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime) and os.path.isdir(runtime):
        base = Path(runtime)
        if len(str(base / DIR_NAME / SOCKET_NAME)) <= MAX_UNIX_PATH:
            return base
    import tempfile  # only here: its import costs the one-shot host milliseconds

    uid = os.getuid() if hasattr(os, "getuid") else 0
    temp = tempfile.gettempdir()
    if len(temp) > MAX_UNIX_PATH - 60:
        temp = "/tmp"  # noqa: S108 (a 0700 per-user directory inside it, checked)
    return Path(temp) / f"jst-runtime-{uid}"


def _private_dir(path: Path) -> None:
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        if sys.platform == "win32":
            return
        info = os.lstat(path)
    except OSError as exc:
        raise RuntimeDirError(f"cannot create {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise RuntimeDirError(f"{path} is not a directory owned by this user")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, 0o700)


def runtime_dir(create: bool = True) -> Path:
    """``<runtime>/jstorrent-native``, created 0700 (and its parent, outside XDG) if asked."""
    base = runtime_base()
    directory = base / DIR_NAME
    if create:
        if base.name.startswith("jst-runtime-"):
            _private_dir(base)
        _private_dir(directory)
    return directory


def socket_path(directory: Path | None = None) -> Path:
    return (directory or runtime_dir(create=False)) / SOCKET_NAME
