"""Blocking file work of the file routes. Every function here runs in a worker thread.

Each route does all its filesystem work in ONE call into this module, so a request pays
at most one thread hop (about 80 us of CPU here, far more than a 16 KiB pread); the hot
16 KiB reads usually pay none (fastfile.py answers them on the event loop).

Resolution is descriptor-relative (fsroot.py; fsroot_portable.py where the OS has no
``openat``): a missing root folder is 404 ``Download root folder is not available``, a
symlink that leads outside the root is 400, and what a route opens is checked with
``fstat`` on the descriptor it then uses. Only regular files are read, written, hashed
or truncated (and folders listed); a FIFO, socket or device is 400 ``Not a regular file``
and is opened, if at all, with ``O_NONBLOCK`` so that it cannot block a thread. A folder
where a file is wanted keeps the original's answer (the read or write fails: 500).

OSErrors become HTTP errors only through ``_failed`` (``errors.map_os_error``, with the
status the spec gives to the step that failed, §5.8-§5.9; ``ENAMETOOLONG`` is 400).

API for other modules (e.g. ``GET /stream``)::

    target = ctx.state.target(root_key, rel)          # 403 / 400 (paths.py)
    with await fastfile.open_for_read(target) as f:   # async: loop if cached, else thread
        ...  # f.fd: a regular file opened O_RDONLY|O_CLOEXEC (O_NONBLOCK too: no effect
             # on a regular file; fine for os.sendfile/os.preadv), f.size, f.mtime_ns

``fastfile.open_for_read`` (or ``fileops.open_for_read`` in a worker thread) raises the
``HttpError`` to answer with: 404 missing file or root folder gone, 400 a path that
leads outside the root, 400 ``Not a regular file`` (a folder, a FIFO, a device). The
caller owns the descriptor (``OpenFile`` is a context manager that closes it).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat as stat_mod
from collections.abc import Iterator
from typing import Any

import attrs

from jst.daemon import fsroot
from jst.daemon.errors import (
    BadRequest,
    Conflict,
    HttpError,
    InternalError,
    map_os_error,
    os_error_text,
)
from jst.daemon.http import READ_LIMIT
from jst.daemon.paths import (
    InvalidPath,
    NotRegularFile,
    PathEscapesRoot,
    RootUnavailable,
    Target,
)

if fsroot.supported():
    _fs: Any = fsroot
else:  # pragma: no cover - Windows
    from jst.daemon import fsroot_portable as _fs

__all__ = [
    "OpenFile",
    "PathEscapesRoot",
    "RootUnavailable",
    "check_sha1",
    "delete",
    "ensure_dir",
    "hash_file",
    "list_dir",
    "open_for_read",
    "read_range",
    "stat",
    "truncate",
    "write_at",
]

# Offsets arrive as u64; the OS takes a signed 64-bit off_t. Larger values fail the way
# the original's seek does (EINVAL -> 500) instead of raising OverflowError.
OFF_T_MAX = 2**63 - 1
# Files are hashed and read in pieces this large: big enough that the per-call overhead
# vanishes, small enough that hashing a 10 GiB range does not hold 10 GiB.
CHUNK = 1024 * 1024
O_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation
# open() of these fails this way only for a FIFO without a reader, a socket, a device
# without a driver: never for a regular file.
_NOT_REGULAR_ERRNOS = frozenset(
    e for e in (errno.ENXIO, errno.ENODEV, getattr(errno, "EOPNOTSUPP", None)) if e is not None
)


def _invalid_offset() -> HttpError:
    return InternalError(os_error_text(OSError(errno.EINVAL, "")))


def _failed(exc: OSError, status: int = 500, *, storage_full: int | None = None) -> HttpError:
    """The answer for an OSError of one step (a name too long for the OS is the client's)."""
    if exc.errno == errno.ENAMETOOLONG:
        return InvalidPath()
    return map_os_error(exc, status, storage_full=storage_full)


@attrs.frozen
class OpenFile:
    """A regular file opened for reading; the owner closes it (or uses ``with``)."""

    fd: int
    size: int
    mtime_ns: int

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> OpenFile:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _open(
    target: Target,
    flags: int,
    status: int,
    *,
    make_dirs: bool = False,
    storage_full: int | None = None,
    allow_dir: bool = True,
) -> tuple[int, os.stat_result]:
    """Open the target and ``fstat`` it: a regular file (or a folder, with ``allow_dir``,
    which the caller's next read or write then fails as the original's would)."""
    try:
        fd: int = _fs.open_file(target, flags | O_BINARY, make_dirs=make_dirs)
    except OSError as exc:
        if exc.errno in _NOT_REGULAR_ERRNOS:
            raise NotRegularFile() from None
        raise _failed(exc, status, storage_full=storage_full) from None
    try:
        st = os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        raise _failed(exc, status) from None
    if stat_mod.S_ISREG(st.st_mode) or (allow_dir and stat_mod.S_ISDIR(st.st_mode)):
        return fd, st
    os.close(fd)
    raise NotRegularFile()


def open_for_read(target: Target) -> OpenFile:
    """A regular file in a root, opened read-only (see the module docstring)."""
    fd, st = _open(target, os.O_RDONLY, 404, allow_dir=False)
    return OpenFile(fd, st.st_size, st.st_mtime_ns)


def check_sha1(body: bytes | memoryview, expected_sha1: str) -> None:
    actual = hashlib.sha1(body, usedforsecurity=False).hexdigest()
    if actual != expected_sha1:
        raise Conflict(f"Hash mismatch: expected {expected_sha1}, got {actual}")


def write_at(
    target: Target,
    body: bytes | memoryview,
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
        check_sha1(body, expected_sha1)
    if offset > OFF_T_MAX:
        raise _invalid_offset()
    flags = os.O_WRONLY | os.O_CREAT
    fd, _st = _open(target, flags, 500, make_dirs=True, storage_full=storage_full)
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
        raise _failed(exc, storage_full=storage_full) from None
    finally:
        os.close(fd)


def _read_pieces(target: Target, offset: int, length: int | None, piece: int) -> Iterator[bytes]:
    """The bytes of ``[offset, offset + length)`` (or to EOF) in pieces of at most
    ``piece`` bytes; stops early at EOF. Open failure 404, other OS errors 500."""
    fd, _st = _open(target, os.O_RDONLY, 404)  # any open failure is 404 (§5.8.2)
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
        raise _failed(exc) from None
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
    try:
        if target.parts:
            _fs.make_dirs(target)
        else:
            os.makedirs(target.root, exist_ok=True)  # the folder is configuration, trusted
    except OSError as exc:
        raise _failed(exc) from None


def stat(target: Target) -> dict[str, Any]:
    """``GET /ops/stat`` (follows symlinks): 404 when missing, else 500 on error."""
    try:
        st: os.stat_result = _fs.stat(target)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise _failed(exc, 404) from None
    except OSError as exc:
        raise _failed(exc) from None
    return {
        "size": st.st_size,
        "mtime": max(st.st_mtime_ns // 1_000_000, 0),
        "is_directory": stat_mod.S_ISDIR(st.st_mode),
        "is_file": stat_mod.S_ISREG(st.st_mode),
    }


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")  # a name that was not UTF-8 holds surrogate escapes
    except UnicodeEncodeError:
        return False
    return True


def list_dir(target: Target) -> list[str]:
    """``GET /ops/list``: entry names; names that are not UTF-8 are left out; errors 500."""
    try:
        names: list[str] = _fs.list_names(target)
    except OSError as exc:
        raise _failed(exc) from None
    return [name for name in names if _is_utf8(name)]


def delete(target: Target) -> None:
    """``POST /ops/delete``: a file, a symlink (not its target) or a whole tree."""
    if target.is_root:
        raise BadRequest("Refusing to delete the download root itself")
    try:
        _fs.remove(target)
    except OSError as exc:
        raise _failed(exc) from None


def truncate(target: Target, length: int) -> None:
    """``POST /ops/truncate``: set an existing file's length (no create; missing = 500)."""
    fd, _st = _open(target, os.O_WRONLY, 500)
    try:
        if length > OFF_T_MAX:
            raise _invalid_offset()
        os.ftruncate(fd, length)
    except OSError as exc:
        raise _failed(exc, storage_full=507) from None
    finally:
        os.close(fd)
