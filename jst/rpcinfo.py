"""``rpc-info.json``: the model, a lenient reader and a faithful writer (PROTOCOL.md §3.2).

Sans-I/O: bytes in, objects out, and back. Reading and writing the file on disk (locking,
atomic replace, backups) belongs to the native-host; the io-daemon only reads.

Design notes
------------
* Lenient on read (§9.17): a profile that does not fit the schema is skipped, not fatal;
  it is kept verbatim in ``RpcInfo.unparsed_profiles`` so that a rewrite never loses it.
  A download root that does not fit is likewise kept raw in its profile.
* Unknown keys survive a round trip (§9.28): each object carries an ``extra`` dict that
  is written back after the known keys.
* Strict types: JSON ``true`` is not the integer 1 and ``5`` is not the string ``"5"``
  (a lenient converter would convert both); unsigned ranges are checked.
* Compact output with keys in the original's order, UTF-8, no ASCII escaping (serde_json's
  behaviour). Pretty-printed input is fine: it is just JSON.
* Only what we can write back is read. Valid JSON that is nested deeper than
  ``MAX_DEPTH`` (a real file is 4 levels deep; 5,000 levels exhaust the parser's
  recursion) or that holds a lone surrogate (``"\\ud800"``, which no UTF-8 writer can
  emit) is an ``RpcInfoError`` like any other unparsable file, never a crash.
* Read and written by hand, not with cattrs: two flat classes do not need it, and
  importing it and building its hooks cost ~20 ms of the first handshake, on the path
  every cold start waits for (issue 17).
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import attrs

U16_MAX = 0xFFFF
U32_MAX = 0xFFFF_FFFF
U64_MAX = 0xFFFF_FFFF_FFFF_FFFF
# Nesting allowed in a document (unknown keys included); rpc-info.json itself is 4 deep.
MAX_DEPTH = 64


class RpcInfoError(ValueError):
    """The bytes are not an rpc-info document at all (not JSON, not an object, ...)."""


def _unsigned(limit: int) -> Any:
    def check(_inst: object, attribute: attrs.Attribute[int], value: int) -> None:
        if not 0 <= value <= limit:
            raise ValueError(f"{attribute.name}={value} is outside 0..{limit}")

    return check


@attrs.define
class DownloadRoot:
    key: str
    path: str
    display_name: str = ""
    removable: bool = False
    last_stat_ok: bool = True
    last_checked: int = attrs.field(default=0, validator=_unsigned(U64_MAX))
    extra: dict[str, Any] = attrs.field(factory=dict)


@attrs.define
class Browser:
    name: str
    binary: str
    extension_id: str | None = None
    extra: dict[str, Any] = attrs.field(factory=dict)


@attrs.define
class Profile:
    pid: int = attrs.field(validator=_unsigned(U32_MAX))
    port: int = attrs.field(validator=_unsigned(U16_MAX))
    token: str
    started: int = attrs.field(validator=_unsigned(U64_MAX))
    last_used: int = attrs.field(validator=_unsigned(U64_MAX))
    browser: Browser
    download_roots: list[DownloadRoot]
    extension_id: str | None = None
    install_id: str | None = None
    # Roots that did not fit the schema, kept verbatim and written back after the others.
    unparsed_roots: list[Any] = attrs.field(factory=list)
    extra: dict[str, Any] = attrs.field(factory=dict)


@attrs.define
class RpcInfo:
    version: int = 1
    profiles: list[Profile] = attrs.field(factory=list)
    unparsed_profiles: list[Any] = attrs.field(factory=list)
    extra: dict[str, Any] = attrs.field(factory=dict)

    def profile_for_install_id(self, install_id: str) -> Profile | None:
        """The first profile with this install id: the io-daemon's lookup (§5.2)."""
        for profile in self.profiles:
            if profile.install_id == install_id:
                return profile
        return None


# Key order in which the original writes a profile (§3.2); attrs order differs because
# fields with defaults must come last.
_PROFILE_KEY_ORDER = (
    "extension_id",
    "install_id",
    "pid",
    "port",
    "token",
    "started",
    "last_used",
    "browser",
    "download_roots",
)


def _strict_str(value: Any, _type: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _strict_int(value: Any, _type: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def _strict_bool(value: Any, _type: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected a boolean, got {type(value).__name__}")
    return value


# How a field of DownloadRoot or Browser is read, by its annotation (strict, see the notes).
_FIELD_READERS: dict[str, Any] = {
    "str": _strict_str,
    "int": _strict_int,
    "bool": _strict_bool,
    "str | None": lambda value, _type: None if value is None else _strict_str(value, str),
}
_WithExtras = TypeVar("_WithExtras", DownloadRoot, Browser)
for _cls in (DownloadRoot, Browser):  # a new field needs its reader: say so at import
    for _field in attrs.fields(_cls):
        if _field.name != "extra" and str(_field.type) not in _FIELD_READERS:
            raise TypeError(f"no reader for {_cls.__name__}.{_field.name}: {_field.type}")
# What a value that does not fit raises (a root or profile is then kept verbatim).
_STRUCTURE_ERRORS = (TypeError, ValueError, KeyError)


def _structure_with_extras(value: Any, cls: type[_WithExtras]) -> _WithExtras:
    """``cls`` from a dict: each known key read strictly (absent: the field's default,
    else ``KeyError``), unknown keys kept in ``extra``."""
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    kwargs: dict[str, Any] = {}
    known = set()
    for field in attrs.fields(cls):
        if field.name == "extra":
            continue
        known.add(field.name)
        if field.name in value:
            kwargs[field.name] = _FIELD_READERS[str(field.type)](value[field.name], field.type)
        elif field.default is attrs.NOTHING:
            raise KeyError(field.name)
    obj = cls(**kwargs)
    obj.extra = {k: v for k, v in value.items() if k not in known}
    return obj


def _unstructure_with_extras(obj: DownloadRoot | Browser) -> dict[str, Any]:
    """The known fields in declaration order, then the unknown keys kept on read."""
    out: dict[str, Any] = {
        field.name: getattr(obj, field.name)
        for field in attrs.fields(type(obj))
        if field.name != "extra"
    }
    for k, v in obj.extra.items():
        out.setdefault(k, v)
    return out


def _structure_roots(raw: Any) -> tuple[list[DownloadRoot], list[Any]]:
    if not isinstance(raw, list):
        raise TypeError("download_roots must be an array")
    roots: list[DownloadRoot] = []
    unparsed: list[Any] = []
    for item in raw:
        try:
            roots.append(_structure_with_extras(item, DownloadRoot))
        except _STRUCTURE_ERRORS:
            unparsed.append(item)
    return roots, unparsed


def _structure_profile(value: Any) -> Profile:
    if not isinstance(value, dict):
        raise TypeError("a profile must be an object")
    roots, unparsed_roots = _structure_roots(value.get("download_roots"))
    browser = _structure_with_extras(value.get("browser"), Browser)
    return Profile(
        pid=_strict_int(value["pid"], int),
        port=_strict_int(value["port"], int),
        token=_strict_str(value["token"], str),
        started=_strict_int(value["started"], int),
        last_used=_strict_int(value["last_used"], int),
        browser=browser,
        download_roots=roots,
        extension_id=_optional_str(value.get("extension_id")),
        install_id=_optional_str(value.get("install_id")),
        unparsed_roots=unparsed_roots,
        extra={k: v for k, v in value.items() if k not in _PROFILE_KEY_ORDER},
    )


def _optional_str(value: Any) -> str | None:
    return None if value is None else _strict_str(value, str)


def _check_writable(doc: Any) -> None:
    """``RpcInfoError`` unless ``doc`` is shallow and free of lone surrogates.

    Iterative, so it cannot itself run out of stack.
    """
    pending: list[tuple[Any, int]] = [(doc, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, str):
            _check_text(value)
            continue
        if not isinstance(value, dict | list):
            continue
        if depth > MAX_DEPTH:
            raise RpcInfoError(f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            for key, item in value.items():
                _check_text(key)
                pending.append((item, depth + 1))
        else:
            pending.extend((item, depth + 1) for item in value)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RpcInfoError(f"holds a lone surrogate: {text[:80]!r}") from exc


def parse_rpc_info(data: bytes) -> RpcInfo:
    """Parse ``rpc-info.json`` bytes; raise ``RpcInfoError`` only if nothing is usable."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RpcInfoError(f"not valid UTF-8 JSON: {exc}") from exc
    except RecursionError as exc:
        raise RpcInfoError("nested too deeply to parse") from exc
    _check_writable(doc)
    if not isinstance(doc, dict):
        raise RpcInfoError("top level is not a JSON object")
    raw_profiles = doc.get("profiles", [])
    if not isinstance(raw_profiles, list):
        raise RpcInfoError("'profiles' is not an array")
    version = doc.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= U32_MAX:
        raise RpcInfoError("'version' is not an unsigned 32-bit integer")
    info = RpcInfo(
        version=version,
        extra={k: v for k, v in doc.items() if k not in ("version", "profiles")},
    )
    for raw in raw_profiles:
        try:
            info.profiles.append(_structure_profile(raw))
        except _STRUCTURE_ERRORS:
            info.unparsed_profiles.append(raw)
    return info


def _unstructure_profile(profile: Profile) -> dict[str, Any]:
    out: dict[str, Any] = {
        "extension_id": profile.extension_id,
        "install_id": profile.install_id,
        "pid": profile.pid,
        "port": profile.port,
        "token": profile.token,
        "started": profile.started,
        "last_used": profile.last_used,
        "browser": _unstructure_with_extras(profile.browser),
        "download_roots": [_unstructure_with_extras(r) for r in profile.download_roots]
        + list(profile.unparsed_roots),
    }
    for k, v in profile.extra.items():
        out.setdefault(k, v)
    return out


def dump_rpc_info(info: RpcInfo) -> bytes:
    """Serialize compactly, in the original's key order, keeping unknown data."""
    doc: dict[str, Any] = {
        "version": info.version,
        "profiles": [_unstructure_profile(p) for p in info.profiles] + list(info.unparsed_profiles),
    }
    for k, v in info.extra.items():
        doc.setdefault(k, v)
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
