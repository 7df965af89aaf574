"""The link-handler's argument: a magnet link, a ``.torrent`` path or a ``file://`` URI.

Checked before anything else happens, so a bad argument costs no browser launch and
gets a message that says what is wrong:

* a magnet must be ``magnet:?...`` with a BitTorrent info hash (``xt=urn:btih:`` with
  40 hex or 32 base32 characters, or ``xt=urn:btmh:``, BitTorrent v2);
* a file must exist, be a regular file, look like a torrent (a bencoded dictionary with
  an ``info`` key), and be small enough to travel as a Native Messaging event: its
  base64 must fit the host's 900,000-character limit (a 675,000-byte file), the same
  limit the host enforces with 413 (§4.3);
* ``file://`` URIs (what ``%u`` in a desktop entry may pass) name local files (§9.25).

A file name that is not UTF-8 (Python hands it to us with lone surrogates, which no
JSON or UTF-8 writer can carry) is sent with each undecodable byte shown as U+FFFD; the
path itself is only ever used as bytes (opening the file, the launch URL).
"""

from __future__ import annotations

import base64
import os
import re
from urllib.parse import parse_qs, unquote, urlsplit

import attrs

MAX_BASE64 = 900_000
MAX_TORRENT_BYTES = MAX_BASE64 // 4 * 3
TOO_LARGE = (
    "This torrent file is too large to open via file association.\n\n"
    "Please drag and drop it directly into JSTorrent instead."
)
_BTIH = re.compile(r"urn:btih:([0-9a-fA-F]{40}|[A-Za-z2-7]{32})")
_BTMH = re.compile(r"urn:btmh:[0-9a-fA-F]{68}")


class LinkError(Exception):
    """The link could not be handed over; the message is shown to the user."""


@attrs.frozen
class Magnet:
    link: str


@attrs.frozen
class TorrentFile:
    path: str
    name: str
    contents_base64: str


def _check_magnet(link: str) -> Magnet:
    if not link.lower().startswith("magnet:?"):
        raise LinkError(f"Not a magnet link (it must start with 'magnet:?'): {link}")
    params = parse_qs(link[len("magnet:?") :])
    hashes = params.get("xt", []) + params.get("xt.1", [])
    if not any(_BTIH.fullmatch(x) or _BTMH.fullmatch(x) for x in hashes):
        raise LinkError("Not a BitTorrent magnet link: it has no info hash (xt=urn:btih:...)")
    return Magnet(link)


def _path_from_file_uri(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise LinkError(f"Not a local file: {uri}")
    return os.fsdecode(unquote(parts.path).encode("utf-8", "surrogateescape"))


def looks_like_torrent(data: bytes) -> bool:
    """A bencoded dictionary that has an ``info`` dictionary: every .torrent does."""
    return data[:1] == b"d" and data[-1:] == b"e" and b"4:infod" in data


def _check_file(path: str, shown: str) -> TorrentFile:
    try:
        if not os.path.isfile(path):
            if os.path.exists(path):
                raise LinkError(f"Not a file: {shown}")
            raise LinkError(f"File does not exist: {shown}")
        if os.path.getsize(path) > MAX_TORRENT_BYTES:
            raise LinkError(TOO_LARGE)
        with open(path, "rb") as f:
            data = f.read(MAX_TORRENT_BYTES + 1)
    except OSError as exc:
        raise LinkError(f"Cannot read {shown}: {exc.strerror or exc}") from exc
    if len(data) > MAX_TORRENT_BYTES:
        raise LinkError(TOO_LARGE)
    if not looks_like_torrent(data):
        raise LinkError(f"Not a torrent file: {shown}")
    name = os.fsencode(os.path.basename(path)).decode("utf-8", "replace")
    return TorrentFile(path, name, base64.b64encode(data).decode("ascii"))


def printable(text: str) -> str:
    """``text`` with lone surrogates (undecodable bytes of a path) as ``\\udcff`` escapes,
    so it can be logged and shown."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def parse_target(target: str) -> Magnet | TorrentFile:
    if target.lower().startswith("magnet:"):
        return _check_magnet(target)
    if target.lower().startswith("file:"):
        return _check_file(_path_from_file_uri(target), target)
    return _check_file(target, target)
