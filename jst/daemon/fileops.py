"""Blocking file work of the file routes. Every function here runs in a worker thread.

Each route does all its filesystem work in ONE call into this module, so a request pays
one thread hop (about 100-250 us of CPU here, more than a 16 KiB pwrite costs itself).
Each function first checks that the root folder exists and that the target does not
escape it through a symlink, then does the work.

OSErrors become HTTP errors only through ``errors.map_os_error``, with the status the
spec gives to the step that failed (§5.8-§5.9).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat as stat_mod
from collections.abc import Iterator
from typing import Any

from jst.daemon.errors import (
    BadRequest,
    Conflict,
    HttpError,
    InternalError,
    NotFound,
    map_os_error,
    os_error_text,
)
from jst.daemon.http import READ_LIMIT
from jst.daemon.paths import Target, is_within

# Offsets arrive as u64; the OS takes a signed 64-bit off_t. Larger values fail the way
# the original's seek does (EINVAL -> 500) instead of raising OverflowError.
OFF_T_MAX = 2**63 - 1
# Files are hashed and read in pieces this large: big enough that the per-call overhead
# vanishes, small enough that hashing a 10 GiB range does not hold 10 GiB.
CHUNK = 1024 * 1024
O_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation
O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class RootUnavailable(NotFound):
    """The root folder is missing (an unplugged drive, a deleted folder)."""

    def __init__(self, target: Target) -> None:
        super().__init__(f"Download root folder is not available: {target.root}")


class PathEscapesRoot(BadRequest):
    def __init__(self) -> None:
        super().__init__("Invalid path: it leads outside the download root")


def _invalid_offset() -> HttpError:
    return InternalError(os_error_text(OSError(errno.EINVAL, "")))


def check_target(target: Target, *, follow_final: bool = True) -> None:
    """Refuse a missing root folder, and a target that symlinks its way out of the root.

    ``follow_final=False`` checks only the target's parent: deleting a symlink that
    points outside the root removes the link, which is safe.
    """
    if not os.path.isdir(target.root):
        raise RootUnavailable(target)
    if not target.parts:
        return
    real_root = os.path.realpath(target.root)
    if follow_final:
        real = os.path.realpath(target.path)
    else:
        real = os.path.join(os.path.realpath(os.path.dirname(target.path)), target.parts[-1])
    if not is_within(real, real_root):
        raise PathEscapesRoot()


def _open_for_write(path: str, storage_full: int | None) -> int:
    flags = os.O_WRONLY | os.O_CREAT | O_BINARY | O_CLOEXEC
    try:
        return os.open(path, flags, 0o666)
    except FileNotFoundError:
        pass  # parent folders missing: create them, then open once more
    except OSError as exc:
        raise map_os_error(exc, storage_full=storage_full) from None
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return os.open(path, flags, 0o666)
    except OSError as exc:
        raise map_os_error(exc, storage_full=storage_full) from None


def write_at(
    target: Target,
    body: bytes,
    offset: int,
    expected_sha1: str | None,
    *,
    storage_full: int | None = 507,
) -> None:
    """``POST /write`` (and legacy ``POST /files``, with ``storage_full=None``).

    Never truncates; creates missing parents; writes the whole body before returning,
    so the 200 means the bytes are in the file (in the page cache; no fsync, §5.8.1).
    """
    if expected_sha1 is not None:
        actual = hashlib.sha1(body, usedforsecurity=False).hexdigest()
        if actual != expected_sha1:
            raise Conflict(f"Hash mismatch: expected {expected_sha1}, got {actual}")
    check_target(target)
    if offset > OFF_T_MAX:
        raise _invalid_offset()
    fd = _open_for_write(target.path, storage_full)
    try:
        view = memoryview(body)
        position = offset
        while view:
            written = os.pwrite(fd, view, position)
            view = view[written:]
            position += written
    except OverflowError:
        raise _invalid_offset() from None
    except OSError as exc:
        raise map_os_error(exc, storage_full=storage_full) from None
    finally:
        os.close(fd)


def _open_for_read(target: Target) -> int:
    check_target(target)
    try:
        return os.open(target.path, os.O_RDONLY | O_BINARY | O_CLOEXEC)
    except OSError as exc:
        raise map_os_error(exc, 404) from None  # any open failure is 404 (§5.8.2)


def _read_pieces(target: Target, offset: int, length: int | None, piece: int) -> Iterator[bytes]:
    """The bytes of ``[offset, offset + length)`` (or to EOF) in pieces of at most
    ``piece`` bytes; stops early at EOF. Open failure 404, other OS errors 500."""
    fd = _open_for_read(target)
    try:
        if offset > OFF_T_MAX:
            raise _invalid_offset()
        done = 0
        while length is None or done < length:
            size = piece if length is None else min(piece, length - done)
            chunk = os.pread(fd, size, offset + done)
            if not chunk:
                return
            yield chunk
            done += len(chunk)
    except OverflowError:
        raise _invalid_offset() from None
    except OSError as exc:
        raise map_os_error(exc) from None
    finally:
        os.close(fd)


def read_range(target: Target, offset: int, length: int | None) -> bytes:
    """``GET /read``: exactly ``length`` bytes (500 on a short file), or up to EOF."""
    if length is not None and length > READ_LIMIT:
        raise BadRequest(f"Invalid X-Length value: more than {READ_LIMIT} bytes")
    if length is None:
        # To EOF: 1 MiB pieces, one past the limit to detect a read that is too large.
        chunks = list(_read_pieces(target, offset, READ_LIMIT + 1, CHUNK))
    else:
        # A known length is read in one piece (one allocation, usually one pread).
        chunks = list(_read_pieces(target, offset, length, max(length, 1)))
    got = sum(map(len, chunks))
    if length is None and got > READ_LIMIT:
        raise BadRequest(f"Read of more than {READ_LIMIT} bytes refused: send X-Length")
    if length is not None and got < length:
        raise InternalError("early eof")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def hash_file(target: Target, algorithm: str, offset: int, length: int | None) -> str:
    """``GET /hash/<algo>/<path>``: hex digest of a range; a short file is not an error."""
    digest = hashlib.new(algorithm)
    for chunk in _read_pieces(target, offset, length, CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def ensure_dir(target: Target) -> None:
    """``POST /files/ensure_dir``: mkdir -p. The empty path creates the root itself."""
    if target.parts:
        check_target(target)
    try:
        os.makedirs(target.path, exist_ok=True)
    except OSError as exc:
        raise map_os_error(exc) from None


def stat(target: Target) -> dict[str, Any]:
    """``GET /ops/stat`` (follows symlinks): 404 when missing, else 500 on error."""
    check_target(target)
    try:
        st = os.stat(target.path)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise map_os_error(exc, 404) from None
    except OSError as exc:
        raise map_os_error(exc) from None
    return {
        "size": st.st_size,
        "mtime": max(st.st_mtime_ns // 1_000_000, 0),
        "is_directory": stat_mod.S_ISDIR(st.st_mode),
        "is_file": stat_mod.S_ISREG(st.st_mode),
    }


def list_dir(target: Target) -> list[str]:
    """``GET /ops/list``: entry names; names that are not UTF-8 are left out; errors 500."""
    check_target(target)
    try:
        raw_names = os.listdir(os.fsencode(target.path))
    except OSError as exc:
        raise map_os_error(exc) from None
    names = []
    for raw in raw_names:
        try:
            names.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            continue
    return names


def delete(target: Target) -> None:
    """``POST /ops/delete``: a file, a symlink (not its target) or a whole tree."""
    if target.is_root:
        raise BadRequest("Refusing to delete the download root itself")
    check_target(target, follow_final=False)
    try:
        st = os.lstat(target.path)
        if stat_mod.S_ISDIR(st.st_mode):
            shutil.rmtree(target.path)
        else:
            os.unlink(target.path)
    except OSError as exc:
        raise map_os_error(exc) from None


def truncate(target: Target, length: int) -> None:
    """``POST /ops/truncate``: set an existing file's length (no create; missing = 500)."""
    check_target(target)
    if length > OFF_T_MAX:
        raise _invalid_offset()
    try:
        fd = os.open(target.path, os.O_WRONLY | O_BINARY | O_CLOEXEC)
    except OSError as exc:
        raise map_os_error(exc) from None
    try:
        os.ftruncate(fd, length)
    except OSError as exc:
        raise map_os_error(exc, storage_full=507) from None
    finally:
        os.close(fd)
