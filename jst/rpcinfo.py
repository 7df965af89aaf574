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
  (cattrs' default hooks would convert both); unsigned ranges are checked.
* Compact output with keys in the original's order, UTF-8, no ASCII escaping (serde_json's
  behaviour). Pretty-printed input is fine: it is just JSON.
* Only what we can write back is read. Valid JSON that is nested deeper than
  ``MAX_DEPTH`` (a real file is 4 levels deep; 5,000 levels exhaust the parser's
  recursion) or that holds a lone surrogate (``"\\ud800"``, which no UTF-8 writer can
  emit) is an ``RpcInfoError`` like any other unparsable file, never a crash.
* cattrs (~20 ms to import and to build the hooks) is loaded by the first parse or dump,
  not by ``import jst.rpcinfo``: a daemon under a host gets its config over the control
  channel and never parses the file, yet imports this module for its types (issue 17).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    import cattrs

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


_converter_cache: list[cattrs.Converter] = []


def _converter() -> cattrs.Converter:
    """The one converter, built on first use (see the module notes)."""
    if not _converter_cache:
        _converter_cache.append(_build_converter())
    return _converter_cache[0]


def _build_converter() -> cattrs.Converter:
    import cattrs

    converter = cattrs.Converter()
    converter.register_structure_hook(str, _strict_str)
    converter.register_structure_hook(int, _strict_int)
    converter.register_structure_hook(bool, _strict_bool)
    _register_with_extras(converter, DownloadRoot)
    _register_with_extras(converter, Browser)
    return converter


def _register_with_extras(converter: cattrs.Converter, cls: type[Any], *omitted: str) -> None:
    """Structure ``cls`` from a dict, keeping unknown keys in its ``extra`` field."""
    from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

    omit = {name: override(omit=True) for name in ("extra", *omitted)}
    structure = make_dict_structure_fn(cls, converter, **omit)  # type: ignore[arg-type]
    unstructure = make_dict_unstructure_fn(cls, converter, **omit)  # type: ignore[arg-type]
    known = {a.name for a in attrs.fields(cls)}

    def structure_hook(value: Any, _type: Any) -> Any:
        if not isinstance(value, dict):
            raise TypeError(f"expected an object, got {type(value).__name__}")
        obj = structure(value, cls)
        obj.extra = {k: v for k, v in value.items() if k not in known}
        return obj

    def unstructure_hook(obj: Any) -> dict[str, Any]:
        out: dict[str, Any] = unstructure(obj)
        for k, v in obj.extra.items():
            out.setdefault(k, v)
        return out

    converter.register_structure_hook(cls, structure_hook)
    converter.register_unstructure_hook(cls, unstructure_hook)


def _structure_errors() -> tuple[type[Exception], ...]:
    """What a structure call raises for data that does not fit (cattrs loaded by now)."""
    from cattrs import BaseValidationError

    return (BaseValidationError, TypeError, ValueError, KeyError)


def _structure_roots(
    raw: Any, converter: cattrs.Converter, errors: tuple[type[Exception], ...]
) -> tuple[list[DownloadRoot], list[Any]]:
    if not isinstance(raw, list):
        raise TypeError("download_roots must be an array")
    roots: list[DownloadRoot] = []
    unparsed: list[Any] = []
    for item in raw:
        try:
            roots.append(converter.structure(item, DownloadRoot))
        except errors:
            unparsed.append(item)
    return roots, unparsed


def _structure_profile(
    value: Any, converter: cattrs.Converter, errors: tuple[type[Exception], ...]
) -> Profile:
    if not isinstance(value, dict):
        raise TypeError("a profile must be an object")
    roots, unparsed_roots = _structure_roots(value.get("download_roots"), converter, errors)
    browser = converter.structure(value.get("browser"), Browser)
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
    converter, errors = _converter(), _structure_errors()
    for raw in raw_profiles:
        try:
            info.profiles.append(_structure_profile(raw, converter, errors))
        except errors:
            info.unparsed_profiles.append(raw)
    return info


def _unstructure_profile(profile: Profile, converter: cattrs.Converter) -> dict[str, Any]:
    out: dict[str, Any] = {
        "extension_id": profile.extension_id,
        "install_id": profile.install_id,
        "pid": profile.pid,
        "port": profile.port,
        "token": profile.token,
        "started": profile.started,
        "last_used": profile.last_used,
        "browser": converter.unstructure(profile.browser),
        "download_roots": [converter.unstructure(r) for r in profile.download_roots]
        + list(profile.unparsed_roots),
    }
    for k, v in profile.extra.items():
        out.setdefault(k, v)
    return out


def dump_rpc_info(info: RpcInfo) -> bytes:
    """Serialize compactly, in the original's key order, keeping unknown data."""
    converter = _converter()
    doc: dict[str, Any] = {
        "version": info.version,
        "profiles": [_unstructure_profile(p, converter) for p in info.profiles]
        + list(info.unparsed_profiles),
    }
    for k, v in info.extra.items():
        doc.setdefault(k, v)
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
