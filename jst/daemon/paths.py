"""Root and path resolution for every file route (§5.6, with the §9.11/§9.12 fixes).

Pure: strings in, a ``Target`` out; the checks that need the filesystem (symlink
containment, a missing root folder) live in fileops.py and run in the worker thread.

What is refused, with 400 ``Invalid path``:
* a ``..`` *component* (``a..b.txt`` is a legal name and is accepted, unlike the original);
* an absolute path: a leading ``/`` or ``\\`` (this covers UNC ``\\\\server\\share``);
* a drive letter as the first component (``C:``, ``C:x``), on every OS, so that a client
  behaves the same against a Linux and a Windows daemon;
* a NUL byte, which no OS accepts in a file name.

Backslashes separate components, as in the original (clients on Windows send them).
Empty and ``.`` components are dropped. The empty path is the root itself.
"""

from __future__ import annotations

import os
import re

import attrs

from jst.daemon.errors import BadRequest

_DRIVE_RE = re.compile(r"[A-Za-z]:")


class InvalidPath(BadRequest):
    def __init__(self) -> None:
        super().__init__("Invalid path")


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
    return parts


def resolve(root: str, rel: str) -> Target:
    parts = split_relative(rel)
    return Target(root=root, path=os.path.join(root, *parts), parts=parts)


def is_within(path: str, root: str) -> bool:
    """Is ``path`` the folder ``root`` or below it? Both must be normalized alike."""
    if path == root:
        return True
    prefix = root if root.endswith(os.sep) else root + os.sep
    return path.startswith(prefix)
