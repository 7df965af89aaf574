"""Requests, responses and events of the Native Messaging channel (§2.2–2.5), sans-I/O.

``parse_request`` turns a frame body into one of the request classes or a ``Rejected``;
the response and event builders return plain dicts whose key order is the original's
(``id``, ``ok``, ``error``, ``type``, ``payload``), ready for ``nm.encode_frame``.

The original silently ignored a malformed request (§2.2), leaving the extension to time
out. When the request's ``id`` can be recovered we answer ``ok:false`` with the reason
instead (§9.29); without a string ``id`` there is no one to answer and the frame is only
logged.

No frame raises: JSON nested too deeply for the parser (a 1,000-deep array) is rejected,
and its ``id`` is still looked for among the top-level keys by a scanner that does not
build the document (``_top_level_id``). An ``id`` holding a lone surrogate (``"\\ud800"``,
valid JSON but not Unicode) is kept and echoed back (``nm.encode_json`` escapes it);
any other field holding one is invalid, since it would end up in rpc-info.json.
"""

from __future__ import annotations

import json
import json.decoder
import re
from collections.abc import Callable
from typing import Any

import attrs


@attrs.frozen
class Handshake:
    id: str
    extension_id: str
    install_id: str


@attrs.frozen
class PickDownloadDirectory:
    id: str


@attrs.frozen
class DeleteDownloadRoot:
    id: str
    key: str


@attrs.frozen
class OpenPath:
    """``openFile`` (``reveal`` false) or ``revealInFolder`` (``reveal`` true)."""

    id: str
    root_key: str
    path: str
    reveal: bool


@attrs.frozen
class Rejected:
    """A frame that is not a valid request. ``id`` is ``None`` when none could be read."""

    id: str | None
    reason: str


Request = Handshake | PickDownloadDirectory | DeleteDownloadRoot | OpenPath


def _field(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        raise ValueError(f"Missing or invalid field '{name}' (a string is required)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"Invalid field '{name}' (it holds a lone surrogate)") from None
    return value


# How much of a too-deep frame is searched for its id. The scan is a Python loop on the
# event loop; 256 KiB takes a few tens of milliseconds. An id is one of the first keys.
ID_SCAN_LIMIT = 256 * 1024
# The json module's string decoder (C), which typeshed does not declare.
scanstring: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]
_SCAN_TOKENS = re.compile(r'["{}\[\],]')
_BLANK = re.compile(r"[ \t\n\r]*")


def _top_level_id(text: str) -> str | None:
    """The string value of the top-level ``"id"`` key of a JSON object, or ``None``.

    Walks the text with bracket counting (strings decoded by the json module's own
    ``scanstring``), so nesting costs no recursion.
    """
    text = text[:ID_SCAN_LIMIT]
    start = _BLANK.match(text).end()  # type: ignore[union-attr]
    if not text.startswith("{", start):
        return None
    depth, expect_key, pos = 0, True, start + 1
    while (token := _SCAN_TOKENS.search(text, pos)) is not None:
        char, pos = token.group(), token.end()
        if char == '"':
            try:
                key, pos = scanstring(text, pos)
            except ValueError:
                return None
            if depth or not expect_key:
                continue
            expect_key = False
            colon = _BLANK.match(text, pos).end()  # type: ignore[union-attr]
            if key != "id" or not text.startswith(":", colon):
                continue
            value = _BLANK.match(text, colon + 1).end()  # type: ignore[union-attr]
            if not text.startswith('"', value):
                return None
            try:
                return str(scanstring(text, value + 1)[0])
            except ValueError:
                return None
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth < 0:
                return None
        elif depth == 0:  # a comma between top-level members
            expect_key = True
    return None


def parse_request(body: bytes) -> Request | Rejected:
    try:
        text = body.decode("utf-8")
        obj = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        return Rejected(None, f"not valid UTF-8 JSON: {exc}")
    except RecursionError:
        return Rejected(_top_level_id(text), "the request is nested too deeply")
    if not isinstance(obj, dict):
        return Rejected(None, "a request must be a JSON object")
    request_id = obj.get("id")
    if not isinstance(request_id, str):
        return Rejected(None, "the request has no string 'id'")
    op = obj.get("op")
    try:
        match op:
            case "handshake":
                return Handshake(request_id, _field(obj, "extensionId"), _field(obj, "installId"))
            case "pickDownloadDirectory":
                return PickDownloadDirectory(request_id)
            case "deleteDownloadRoot":
                return DeleteDownloadRoot(request_id, _field(obj, "key"))
            case "openFile" | "revealInFolder":
                return OpenPath(
                    request_id, _field(obj, "rootKey"), _field(obj, "path"), op == "revealInFolder"
                )
            case str():
                return Rejected(request_id, f"Unknown operation: {op}")
            case _:
                return Rejected(request_id, "Missing or invalid field 'op' (a string is required)")
    except ValueError as exc:
        return Rejected(request_id, str(exc))


def success(request_id: str, kind: str = "Empty", payload: Any = None) -> dict[str, Any]:
    message: dict[str, Any] = {"id": request_id, "ok": True, "type": kind}
    if kind != "Empty":
        message["payload"] = payload
    return message


def failure(request_id: str, error: str) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "error": error, "type": "Empty"}


def daemon_info(
    request_id: str, port: int, token: str, version: str, roots: list[dict[str, Any]]
) -> dict[str, Any]:
    payload = {"port": port, "token": token, "version": version, "roots": roots}
    return success(request_id, "DaemonInfo", payload)


def root_added(request_id: str, root: dict[str, Any]) -> dict[str, Any]:
    return success(request_id, "RootAdded", {"root": root})


def root_removed(request_id: str, key: str) -> dict[str, Any]:
    return success(request_id, "RootRemoved", {"key": key})


def magnet_added(link: str) -> dict[str, Any]:
    return {"event": "MagnetAdded", "payload": {"link": link}}


def torrent_added(name: str, contents_base64: str) -> dict[str, Any]:
    # ``infohash`` is always empty: the extension computes it (§2.5).
    return {
        "event": "TorrentAdded",
        "payload": {"name": name, "infohash": "", "contentsBase64": contents_base64},
    }
