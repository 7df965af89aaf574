"""Root and path rules for every file route (§5.6, with the §9.11/§9.12 fixes).

Pure: strings in, a ``Target`` out. Resolution on disk (symlinks, a missing root folder)
is descriptor-relative and lives in fsroot.py; the errors it raises are defined here so
that every layer names them the same way.

What is refused, with 400 ``Invalid path``:
* a ``..`` *component* (``a..b.txt`` is a legal name and is accepted, unlike the original);
* an absolute path: a leading ``/`` or ``\\`` (this covers UNC ``\\\\server\\share``);
* a drive letter as the first component (``C:``, ``C:x``), on every OS, so that a client
  behaves the same against a Linux and a Windows daemon;
* a NUL byte, which no OS accepts in a file name, and a lone surrogate (JSON allows
  ``"\\ud800"``), which no file name encodes to;
* a path deeper than ``MAX_DEPTH`` components or longer than ``PATH_MAX`` bytes with its
  root (the walk in fsroot.py opens one component per call, so the kernel's own
  ``ENAMETOOLONG`` would no longer stop a 2,000-deep path; a too-long single name still
  gets ``ENAMETOOLONG`` from the file system, which fileops.py also answers with 400).

Backslashes separate components, as in the original (clients on Windows send them).
Empty and ``.`` components are dropped. The empty path is the root itself.
"""

from __future__ import annotations

import os
import re

import attrs

from jst.daemon.errors import BadRequest, NotFound

_DRIVE_RE = re.compile(r"[A-Za-z]:")
# Linux's PATH_MAX (the largest of the platforms we run on); no real torrent comes near.
PATH_MAX = 4096
# 1,024 nested folders is far beyond any torrent, far below the 2,048 that PATH_MAX allows
# with one-letter names; it bounds the descriptors and syscalls one request can cost.
MAX_DEPTH = 1024


class InvalidPath(BadRequest):
    def __init__(self) -> None:
        super().__init__("Invalid path")


class PathEscapesRoot(BadRequest):
    """A symlink inside the root leads outside it (checked at every step of the walk)."""

    def __init__(self) -> None:
        super().__init__("Invalid path: it leads outside the download root")


class NotRegularFile(BadRequest):
    """A FIFO, socket or device where a route reads or writes a file (issue 12 item 7)."""

    def __init__(self) -> None:
        super().__init__("Not a regular file")


class RootUnavailable(NotFound):
    """The root folder is missing (an unplugged drive, a deleted folder)."""

    def __init__(self, folder: str) -> None:
        super().__init__(f"Download root folder is not available: {folder}")


@attrs.frozen
class Target:
    root: str  # the download root's folder, as configured
    path: str  # the file or folder the request names, inside ``root``
    parts: tuple[str, ...]  # the relative components; () for the root itself

    @property
    def is_root(self) -> bool:
        return not self.parts


def split_relative(rel: str) -> tuple[str, ...]:
    """Validate a client path and split it into components (raises ``InvalidPath``)."""
    if "\x00" in rel:
        raise InvalidPath()
    normalized = rel.replace("\\", "/")
    if normalized.startswith("/"):
        raise InvalidPath()
    parts = tuple(p for p in normalized.split("/") if p not in ("", "."))
    if ".." in parts:
        raise InvalidPath()
    if parts and _DRIVE_RE.match(parts[0]):
        raise InvalidPath()
    if len(parts) > MAX_DEPTH:
        raise InvalidPath()
    return parts


def resolve(root: str, rel: str) -> Target:
    parts = split_relative(rel)
    path = os.path.join(root, *parts)
    try:
        encoded = os.fsencode(path)
    except UnicodeEncodeError:  # a lone surrogate from a JSON body: no file has that name
        raise InvalidPath() from None
    if len(encoded) >= PATH_MAX:
        raise InvalidPath()
    return Target(root=root, path=path, parts=parts)


def is_within(path: str, root: str) -> bool:
    """Is ``path`` the folder ``root`` or below it? Both must be normalized alike."""
    if path == root:
        return True
    prefix = root if root.endswith(os.sep) else root + os.sep
    return path.startswith(prefix)
