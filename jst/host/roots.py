"""Download roots: key derivation (§2.6) and the host's containment rule (§2.4.4).

Keys must match the original bit for bit: existing ``rpc-info.json`` files and the
extension's saved torrents refer to roots by key. The key is the first 8 bytes of
SHA-256 over the canonical path's UTF-8, in lowercase hex. On Windows the canonical
form is what Rust's ``fs::canonicalize`` returns, with the ``\\\\?\\`` verbatim prefix.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Any

from jst.rpcinfo import DownloadRoot


class ContainmentError(Exception):
    """The requested path is not inside the root; the message is the client's error text."""


def canonical(path: str) -> str:
    """``fs::canonicalize``: absolute, symlinks resolved; ``OSError`` if it does not exist."""
    resolved = os.path.realpath(path, strict=True)
    if sys.platform == "win32":
        resolved = _verbatim(resolved)
    return resolved


def _verbatim(path: str) -> str:
    if path.startswith("\\\\?\\"):
        return path
    if path.startswith("\\\\"):  # \\server\share -> \\?\UNC\server\share
        return "\\\\?\\UNC\\" + path[2:]
    return "\\\\?\\" + path


def root_key(canonical_path: str) -> str:
    return hashlib.sha256(canonical_path.encode("utf-8", "surrogateescape")).digest()[:8].hex()


def now_ms() -> int:
    return int(time.time() * 1000)


def build_root(picked: str) -> DownloadRoot:
    """The DownloadRoot the host records for a folder the user picked (§2.6)."""
    try:
        path = canonical(picked)
    except OSError:
        path = picked
    display_name = Path(picked).name or path
    return DownloadRoot(
        key=root_key(path),
        path=path,
        display_name=display_name,
        removable=False,
        last_stat_ok=True,
        last_checked=now_ms(),
    )


def root_json(root: DownloadRoot) -> dict[str, Any]:
    """A root as the extension sees it (DaemonInfo, RootAdded), in the original's key order."""
    out: dict[str, Any] = {
        "key": root.key,
        "path": root.path,
        "display_name": root.display_name,
        "removable": root.removable,
        "last_stat_ok": root.last_stat_ok,
        "last_checked": root.last_checked,
    }
    return out


def initial_directory(roots: list[DownloadRoot]) -> str:
    """Where the folder dialog opens: the most recently checked healthy root, else home."""
    healthy = [r for r in roots if r.last_stat_ok]
    if healthy:
        newest = max(healthy, key=lambda r: r.last_checked)
        if os.path.isdir(newest.path):
            return newest.path
    return str(Path.home())


def rust_debug(path: str) -> str:
    """A string in Rust's ``{:?}`` quoting, as the original's error messages show paths."""
    out = ['"']
    for ch in path:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\0":
            out.append("\\0")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _inside(path: str, root: str) -> bool:
    return Path(path).is_relative_to(root)


def contained_target(root_path: str, path: str) -> str:
    """The path to open for ``openFile``/``revealInFolder``, or ``ContainmentError``.

    The original's rule (§2.4.4): canonicalize the existing part of the target (the
    target itself, else its parent, else its nearest existing ancestor) and require it
    inside the canonical root. One tightening: the components re-appended below an
    existing ancestor may not contain ``..`` (the original would have let
    ``missing/../../x`` through the check).
    """
    try:
        root = canonical(root_path)
    except OSError as exc:
        raise ContainmentError(f"Invalid root path: {_os_error(exc)}") from exc
    target = path if os.path.isabs(path) else os.path.join(root_path, path)
    if os.path.exists(target):
        resolved = canonical(target)
        if not _inside(resolved, root):
            raise ContainmentError(f"Path escape detected: {rust_debug(path)}")
        return resolved
    parent, name = os.path.split(target)
    if parent and os.path.exists(parent):
        resolved_parent = canonical(parent)
        if not _inside(resolved_parent, root) or name == "..":
            raise ContainmentError(f"Path escape detected in parent: {rust_debug(parent)}")
        return os.path.join(resolved_parent, name)
    ancestor = target
    missing: list[str] = []
    while ancestor and not os.path.exists(ancestor):
        ancestor, name = os.path.split(ancestor)
        if not name:
            break
        missing.insert(0, name)
    try:
        base = canonical(ancestor)
    except OSError as exc:
        raise ContainmentError(f"Path escape detected in base: {rust_debug(ancestor)}") from exc
    if not _inside(base, root) or ".." in missing:
        raise ContainmentError(f"Path escape detected in base: {rust_debug(ancestor)}")
    return os.path.join(base, *missing)


def _os_error(exc: OSError) -> str:
    # Rust's io::Error Display: "<description> (os error <n>)".
    if exc.errno is not None and exc.strerror:
        return f"{exc.strerror} (os error {exc.errno})"
    return str(exc)
