"""Sans-I/O HTTP rules of the io-daemon: everything about a request that needs no socket.

Theory of operation
-------------------
A request reaches the daemon as a ``Request`` (method, raw path, raw query, headers as
bytes) and leaves as a ``Response``. Between them, in this order (§5.3-§5.6):

1. ``OPTIONS`` on any path is a CORS preflight, answered here with 200 and no auth.
2. Every path but ``/health`` and ``/io`` needs the token (``X-JST-Auth`` decides alone
   when present and ASCII, else ``Authorization: Bearer``) -> 401 with an empty body.
   Auth comes before routing, so unknown paths answer 401 without a token, 404 with one.
3. Routing (routes.py) -> 404 / 405 with empty bodies.
4. The handler extracts, in the original's order: body (413/415/400/422), query (400),
   headers (400), root and path (403/400), then does the work.
5. CORS response headers are added to whatever comes out, errors included.

Header values follow the original's parsers exactly: a header is usable only if it is
"visible ASCII" (tab or 0x20-0x7E, like ``HeaderValue::to_str``); numbers are plain
unsigned decimal ``u64`` (an optional ``+`` is accepted, as Rust's ``u64::from_str``
does; whitespace, signs, ``_`` and non-ASCII digits are not, unlike Python's ``int``).
"""

from __future__ import annotations

import binascii
import hmac
import json
import re
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, unquote_to_bytes

import attrs

from jst.daemon.errors import BadRequest, Unprocessable, UnsupportedMediaType

MIB = 1024 * 1024
U64_MAX = 0xFFFF_FFFF_FFFF_FFFF  # as jst.rpcinfo's, which the daemon need not import
# §5.5: the file, hash and ops routes accept 64 MiB bodies (a torrent piece is at most
# 16 MiB, so this is generous); every other route reads no body at all.
FILE_BODY_LIMIT = 64 * MIB
DEFAULT_BODY_LIMIT = 2 * MIB
# §9.13: a read answers at most this many bytes, so X-Length cannot make us allocate more.
READ_LIMIT = 64 * MIB

EXTENSION_ORIGIN_PREFIX = "chrome-extension://"
ALWAYS_ALLOWED_ORIGINS = ("https://new.jstorrent.com", "https://jstorrent.com")
PREFLIGHT_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"access-control-allow-methods", b"GET,POST,PUT,DELETE,OPTIONS"),
    (
        b"access-control-allow-headers",
        b"content-type,authorization,x-jst-auth,x-path-base64,x-offset,x-length,"
        b"x-expected-sha1,x-jst-extensionid,x-jst-installid",
    ),
    (b"access-control-max-age", b"86400"),
)
VARY_HEADER = (b"vary", b"origin, access-control-request-method, access-control-request-headers")

TEXT_PLAIN = b"text/plain; charset=utf-8"
OCTET_STREAM = b"application/octet-stream"
APPLICATION_JSON = b"application/json"

_U64_RE = re.compile(rb"\+?[0-9]+")


class Request(NamedTuple):
    """One request head. A named tuple: built once per request on the hot path, where an
    attrs frozen class's ``__init__`` was a visible cost."""

    method: str
    raw_path: bytes
    query: bytes
    headers: tuple[tuple[bytes, bytes], ...]  # names lower-case, as h11 gives them

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower-case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


@attrs.define
class Response:
    status: int = 200
    body: bytes = b""
    content_type: bytes | None = None
    headers: list[tuple[bytes, bytes]] = attrs.field(factory=list)
    # Runs after the response has been handed to the connection (/control/shutdown).
    after_send: Callable[[], None] | None = None


def text(body: str, status: int = 200) -> Response:
    return Response(status, body.encode("utf-8"), TEXT_PLAIN)


def json_response(value: Any) -> Response:
    return Response(200, json.dumps(value, separators=(",", ":")).encode(), APPLICATION_JSON)


_VISIBLE_ASCII = re.compile(rb"[\t\x20-\x7e]*")


def is_visible_ascii(value: bytes) -> bool:
    return _VISIBLE_ASCII.fullmatch(value) is not None


def parse_u64(value: bytes) -> int | None:
    """Parse a ``u64`` the way Rust's ``str::parse::<u64>`` does; None if it is not one."""
    if not _U64_RE.fullmatch(value):
        return None
    number = int(value)
    return number if number <= U64_MAX else None


def header_u64(req: Request, name: bytes, label: str) -> int | None:
    """An optional numeric header: None if absent, 400 if not ASCII or not a u64."""
    raw = req.header(name)
    if raw is None:
        return None
    if not is_visible_ascii(raw):
        raise BadRequest(f"Invalid {label} header")
    number = parse_u64(raw)
    if number is None:
        raise BadRequest(f"Invalid {label} value")
    return number


def path_from_header(req: Request) -> str:
    """Decode ``X-Path-Base64`` (§5.8.1): standard alphabet, canonical padding, UTF-8."""
    raw = req.header(b"x-path-base64")
    if raw is None:
        raise BadRequest("Missing X-Path-Base64 header")
    if not is_visible_ascii(raw):
        raise BadRequest("Invalid X-Path-Base64 header")
    try:
        decoded = binascii.a2b_base64(raw, strict_mode=True)
    except binascii.Error:
        raise BadRequest("Invalid base64 in X-Path-Base64") from None
    # Strict mode still accepts non-zero trailing bits ("Zh==" for "f"); the original's
    # decoder (base64 crate, STANDARD) does not. Canonical form = re-encodes identically.
    if binascii.b2a_base64(decoded, newline=False) != raw:
        raise BadRequest("Invalid base64 in X-Path-Base64")
    try:
        return decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("Invalid UTF-8 in path") from None


def ascii_header(req: Request, name: bytes, label: str) -> str | None:
    raw = req.header(name)
    if raw is None:
        return None
    if not is_visible_ascii(raw):
        raise BadRequest(f"Invalid {label} header")
    return raw.decode("ascii")


def is_authorized(req: Request, token: bytes) -> bool:
    """§5.3: X-JST-Auth alone decides when present and ASCII; else a Bearer token."""
    supplied = req.header(b"x-jst-auth")
    if supplied is None or not is_visible_ascii(supplied):
        authorization = req.header(b"authorization")
        if authorization is None or not authorization.startswith(b"Bearer "):
            return False
        supplied = authorization[len(b"Bearer ") :]
    return hmac.compare_digest(supplied, token)


# Issue 12 (DNS rebinding): a web page whose name was re-pointed at 127.0.0.1 reaches us
# with its own name in ``Host``; only our loopback names are served. Browsers always
# send the port when it is not the scheme's default (ours never is), but a name without
# a port still names loopback, so it is accepted too (HTTP/1.0 clients may send none).
LOOPBACK_HOSTS = (b"127.0.0.1", b"localhost", b"[::1]")


def host_allowed(host: bytes | None, port: int) -> bool:
    """Is ``Host`` absent, or one of our loopback names with our port (or no port)?"""
    if host is None:
        return True
    value = host.lower()
    if value in LOOPBACK_HOSTS:
        return True
    name, _, given_port = value.rpartition(b":")
    return name in LOOPBACK_HOSTS and given_port == b"%d" % port


def needs_auth(req: Request) -> bool:
    return req.method != "OPTIONS" and req.raw_path not in (b"/health", b"/io")


# /stream/<token> (STREAMING.md) is served by streamhttp.py; the test lives here so that
# telling it apart costs no import of the streaming modules until a stream is asked for.
STREAM_PREFIX = b"/stream/"


def is_stream_request(req: Request) -> bool:
    """Served by streamhttp.py instead of routes.py (OPTIONS stays a preflight there)."""
    return req.method != "OPTIONS" and req.raw_path.startswith(STREAM_PREFIX)


@attrs.frozen
class CorsPolicy:
    """Which ``Origin`` values get ``Access-Control-Allow-Origin`` (§5.4, §9.16).

    The extension origin follows the *current* extension id (reloaded with the roots),
    so a daemon that started before its profile existed still passes the health poll.
    """

    static_origins: frozenset[str]

    @classmethod
    def from_dev_origins(cls, dev_origins: str | None) -> CorsPolicy:
        extra = [o.strip() for o in (dev_origins or "").split(",")]
        return cls(frozenset((*ALWAYS_ALLOWED_ORIGINS, *(o for o in extra if o))))

    def allows(self, origin: bytes, extension_id: str | None) -> bool:
        try:
            value = origin.decode("ascii")
        except UnicodeDecodeError:
            return False
        if value in self.static_origins:
            return True
        return extension_id is not None and value == EXTENSION_ORIGIN_PREFIX + extension_id

    def response_headers(self, req: Request, extension_id: str | None) -> list[tuple[bytes, bytes]]:
        headers = [VARY_HEADER]
        origin = req.header(b"origin")
        if origin is not None and self.allows(origin, extension_id):
            headers.append((b"access-control-allow-origin", origin))
        return headers


def preflight() -> Response:
    """Any OPTIONS request: 200, empty body (CORS headers are added by the caller)."""
    return Response(200, headers=list(PREFLIGHT_HEADERS))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def json_object_body(req: Request, body: bytes) -> dict[str, Any]:
    """Axum's ``Json`` extractor: 415 wrong type, 400 bad JSON, 422 not an object."""
    content_type = req.header(b"content-type") or b""
    mime = content_type.split(b";", 1)[0].strip().lower()
    if not (
        mime == APPLICATION_JSON or (mime.startswith(b"application/") and mime.endswith(b"+json"))
    ):
        raise UnsupportedMediaType("Expected request with `Content-Type: application/json`")
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # Recursion: nested deep
        raise BadRequest(f"Failed to parse the request body as JSON: {exc}") from None
    if not isinstance(value, dict):
        raise Unprocessable("Failed to deserialize the JSON body into the target type")
    return value


def json_field(obj: dict[str, Any], name: str, kind: type) -> Any:
    """A required field of a JSON body, strictly typed (bool is not an int) -> 422."""
    if name not in obj:
        raise Unprocessable(f"Failed to deserialize the JSON body: missing field `{name}`")
    value = obj[name]
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= U64_MAX
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise Unprocessable(f"Failed to deserialize the JSON body: invalid type for `{name}`")
    return value


class Query:
    """A parsed query string with the original's (serde_urlencoded) error texts."""

    def __init__(self, raw: bytes) -> None:
        self._values: dict[str, str] = {}
        try:
            pairs = parse_qsl(raw.decode("ascii"), keep_blank_values=True, errors="strict")
        except (UnicodeDecodeError, ValueError):
            raise BadRequest("Failed to deserialize query string: invalid encoding") from None
        for key, value in pairs:
            self._values.setdefault(key, value)

    def text(self, name: str) -> str:
        if name not in self._values:
            raise BadRequest(f"Failed to deserialize query string: missing field `{name}`")
        return self._values[name]

    def u64(self, name: str) -> int | None:
        if name not in self._values:
            return None
        number = parse_u64(self._values[name].encode("utf-8"))
        if number is None:
            raise BadRequest(f"Failed to deserialize query string: {name}: invalid digit")
        return number


def percent_decode(segment: bytes) -> str:
    """A path parameter, percent-decoded as UTF-8 (invalid -> 400)."""
    try:
        return unquote_to_bytes(segment).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("Invalid URL: path is not valid UTF-8") from None


def allow_header(methods: Iterable[str]) -> tuple[bytes, bytes]:
    return (b"allow", ",".join(methods).encode())
