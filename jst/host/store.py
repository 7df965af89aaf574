"""``rpc-info.json`` on disk: locked read-merge-write, atomic replace, corrupt-file backups.

Promises (§3.3 with the fixes of §9.17):

* **Nothing is lost to concurrency.** Every update holds ``filelock.locked`` from the
  read to the rename, so N hosts updating at once apply N updates in some order.
* **The file is always a whole version.** It is written to a temp file in the same
  directory (mode 0600), fsynced, renamed over the old one, and the directory is
  fsynced: a crash at any point leaves the old or the new file, never a partial one.
* **A file we cannot parse is kept.** It is renamed to ``rpc-info.json.corrupt-<ms>``
  before a fresh one is written, and the log says where it went. A single malformed
  profile does not count: ``rpcinfo.parse_rpc_info`` keeps it verbatim.
* **Backups are bounded.** A program that rewrites the file in place (not atomically)
  makes us read half-written files; such a file is read once more after
  ``REREAD_PAUSE`` before it is declared corrupt, and only the newest
  ``MAX_BACKUPS`` backups are kept (the oldest are removed), so no writer can fill the
  directory with them.
* A file we cannot *read* (permissions, I/O error) is not replaced: the update fails
  with ``StoreError`` and the caller reports it.

All methods block (fsync, the lock): call them from a worker thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from pathlib import Path

from jst import faults
from jst.host.filelock import locked
from jst.host.profiles import HostRecord, merge
from jst.rpcinfo import DownloadRoot, RpcInfo, RpcInfoError, dump_rpc_info, parse_rpc_info

log = logging.getLogger("jst.host.store")

# A real rpc-info.json is a few KiB; anything this large is damage, not data.
MAX_FILE_SIZE = 16 * 1024 * 1024
TEMP_PREFIX = ".rpc-info."
TEMP_SUFFIX = ".tmp"
# A temp file older than this was left by a process killed mid-write (we hold the lock).
STALE_TEMP_SECONDS = 60.0
BACKUP_INFIX = ".corrupt-"
MAX_BACKUPS = 10
# Long enough for an in-place rewrite of a few KiB to finish, short enough to go unnoticed
# in a handshake.
REREAD_PAUSE = 0.05


class StoreError(Exception):
    """rpc-info.json could not be updated; the old file is untouched."""


class RpcInfoStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")

    def update(self, record: HostRecord) -> list[DownloadRoot]:
        """Merge ``record`` into the file (§3.3); return the record's roots afterwards."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with locked(self.lock_path):
                info = self._read()
                roots = merge(info, record, binary_exists=os.path.exists, pid_alive=_pid_alive)
                self._write(dump_rpc_info(info))
                self._remove_stale_temps()
        except OSError as exc:
            raise StoreError(f"cannot update {self.path}: {exc}") from exc
        return roots

    def read(self) -> RpcInfo:
        """The current document (no lock: a rename makes every read see a whole file)."""
        return self._read(backup=False)

    def _read(self, backup: bool = True) -> RpcInfo:
        try:
            return self._parse()
        except RpcInfoError as exc:
            if not backup:
                return RpcInfo()
            log.info("%s did not parse (%s); reading it again", self.path, exc)
        pause(REREAD_PAUSE)  # a writer that rewrites it in place may be mid-write
        try:
            return self._parse()
        except RpcInfoError as exc:
            self._back_up(str(exc))
            return RpcInfo()

    def _parse(self) -> RpcInfo:
        try:
            with open(self.path, "rb") as f:
                data = f.read(MAX_FILE_SIZE + 1)
        except FileNotFoundError:
            return RpcInfo()
        if len(data) > MAX_FILE_SIZE:
            raise RpcInfoError(f"larger than {MAX_FILE_SIZE} bytes")
        return parse_rpc_info(data)

    def backups(self) -> list[Path]:
        """The ``rpc-info.json.corrupt-<ms>`` files, oldest first."""
        prefix = self.path.name + BACKUP_INFIX
        found: list[tuple[int, str]] = []
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.path.parent):
                stamp = entry.name[len(prefix) :]
                if entry.name.startswith(prefix) and stamp.isdigit():
                    found.append((int(stamp), entry.name))
        return [self.path.parent / name for _, name in sorted(found)]

    def _back_up(self, reason: str) -> None:
        backup = self.path.with_name(f"{self.path.name}{BACKUP_INFIX}{int(time.time() * 1000)}")
        os.replace(self.path, backup)
        log.warning(
            "%s is not valid (%s); moved it to %s and started afresh", self.path, reason, backup
        )
        for old in self.backups()[:-MAX_BACKUPS]:
            with contextlib.suppress(OSError):
                old.unlink()
                log.info("removed old backup %s", old)

    def _write(self, data: bytes) -> None:
        directory = self.path.parent
        fd, temp = _mkstemp(directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                faults.point("rpcinfo.after-temp-write")
                f.flush()
                os.fsync(f.fileno())
            faults.point("rpcinfo.before-rename")
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        faults.point("rpcinfo.after-rename")
        _fsync_dir(directory)

    def _remove_stale_temps(self) -> None:
        cutoff = time.time() - STALE_TEMP_SECONDS
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.path.parent):
                if (
                    entry.name.startswith(TEMP_PREFIX)
                    and entry.name.endswith(TEMP_SUFFIX)
                    and entry.stat().st_mtime < cutoff
                ):
                    os.unlink(entry.path)


def _mkstemp(directory: Path) -> tuple[int, str]:
    import tempfile

    # mkstemp creates the file 0600: the tokens in it are secrets (§3.2).
    return tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=directory)


def _fsync_dir(directory: Path) -> None:
    if sys.platform == "win32":
        return  # directories cannot be opened for fsync; NTFS journals the rename
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pause(seconds: float) -> None:
    time.sleep(seconds)


def _pid_alive(pid: int) -> bool:
    import psutil  # only for a temporary entry of another host: not at every cold start

    return bool(psutil.pid_exists(pid))
