"""JSON-RPC 2.0 over lines, sans-I/O: bytes of one line in, calls and replies out.

A line holds one request object or a batch (an array of them). ``parse_line`` turns it
into ``Call``s to run and ``Reply``s that are already decided (parse errors, invalid
requests); ``encode`` turns a reply, or a batch's replies, into one output line. The
loop around it (``jst/ui/rpc.py``) decides when things run and writes lines whole.

The rules, from the JSON-RPC 2.0 specification:

* not JSON → one ``-32700`` reply with id ``null``; JSON that is not a request object
  (or an empty array) → ``-32600`` with id ``null`` (or the id, when it can be read);
* a request without ``id`` is a notification: it runs, nothing is answered (even on
  error); ``id`` may be a string, a number or ``null`` (``NaN`` and infinities, which
  Python's parser reads, are no JSON numbers: ``-32600`` with id ``null``);
* a batch is answered with one array holding the replies of its non-notifications, in
  any order (we keep the request order); a batch of notifications only gets no line;
* unknown method → ``-32601``; params that do not fit → ``-32602`` with a reason in
  ``data.reason``; application errors use codes from ``-32000`` down, also with
  ``data.reason`` (the user-facing sentence).

Method parameters are checked by ``check_params`` against a ``Signature`` (name → type,
required or optional), so every method gets the same precise ``-32602`` messages.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import attrs

VERSION = "2.0"
MAX_LINE = 4 * 1024 * 1024  # a 675 kB torrent is 900 kB of base64, plus room
MAX_BATCH = 100

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

Id = str | int | float | None
_NO_ID = object()  # a notification (no "id" member at all), unlike "id": null


class RpcError(Exception):
    """A call's error reply: ``code``, ``message`` and ``data.reason``."""

    def __init__(self, code: int, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.reason is not None:
            error["data"] = {"reason": self.reason}
        return error


def invalid_params(reason: str) -> RpcError:
    return RpcError(INVALID_PARAMS, "Invalid params", reason)


@attrs.frozen
class Call:
    """A request to run. ``notification`` calls are never answered."""

    method: str
    params: dict[str, Any] | list[Any]
    id: Id = None
    notification: bool = False


@attrs.frozen
class Reply:
    id: Id
    result: Any = None
    error: RpcError | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"jsonrpc": VERSION, "id": self.id}
        if self.error is not None:
            out["error"] = self.error.to_json()
        else:
            out["result"] = self.result
        return out


def error_reply(request_id: Id, code: int, message: str, reason: str | None = None) -> Reply:
    return Reply(request_id, error=RpcError(code, message, reason))


@attrs.frozen
class Parsed:
    """One input line: the calls to run and the replies already known, in request order
    (``slots[i]`` is a ``Call`` or a ``Reply``); ``batch`` says how to encode them."""

    slots: list[Call | Reply]
    batch: bool


def _is_id(value: Any) -> bool:
    """A string, a number or null. Python's parser also reads ``NaN`` and ``Infinity``
    (and turns ``1e400`` into one): not JSON, so an id of neither can be echoed."""
    if isinstance(value, float):
        return math.isfinite(value)
    return not isinstance(value, bool) and isinstance(value, str | int | None)


def _readable_id(obj: Mapping[str, Any]) -> Id:
    value = obj.get("id")
    return value if _is_id(value) else None


def _request(obj: Any) -> Call | Reply:
    if not isinstance(obj, dict):
        return error_reply(None, INVALID_REQUEST, "Invalid Request", "a request must be an object")
    request_id = obj.get("id", _NO_ID)
    if request_id is not _NO_ID and not _is_id(request_id):
        return error_reply(
            None, INVALID_REQUEST, "Invalid Request", "id must be a string, a number or null"
        )
    shown_id = _readable_id(obj)
    if obj.get("jsonrpc") != VERSION:
        return error_reply(shown_id, INVALID_REQUEST, "Invalid Request", 'jsonrpc must be "2.0"')
    method = obj.get("method")
    if not isinstance(method, str):
        return error_reply(shown_id, INVALID_REQUEST, "Invalid Request", "method must be a string")
    params = obj.get("params", {})
    if not isinstance(params, dict | list):
        return error_reply(
            shown_id, INVALID_REQUEST, "Invalid Request", "params must be an object or an array"
        )
    if request_id is _NO_ID:
        return Call(method, params, None, notification=True)
    return Call(method, params, shown_id)


def parse_line(line: bytes) -> Parsed:
    """Parse one line (without its newline). Never raises."""
    try:
        doc = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = f"not valid UTF-8 JSON: {exc}"[:300]
        return Parsed([error_reply(None, PARSE_ERROR, "Parse error", reason)], batch=False)
    if isinstance(doc, list):
        if not doc:
            reply = error_reply(None, INVALID_REQUEST, "Invalid Request", "empty batch")
            return Parsed([reply], batch=False)
        if len(doc) > MAX_BATCH:
            reason = f"a batch holds at most {MAX_BATCH} requests"
            return Parsed([error_reply(None, INVALID_REQUEST, "Invalid Request", reason)], False)
        return Parsed([_request(item) for item in doc], batch=True)
    return Parsed([_request(doc)], batch=False)


def line_too_long() -> bytes:
    reason = f"a line longer than {MAX_LINE} bytes"
    return encode_replies([error_reply(None, PARSE_ERROR, "Parse error", reason)], batch=False)


def encode_replies(replies: list[Reply], batch: bool) -> bytes:
    """The output line for these replies (empty bytes: nothing to write). Always valid
    JSON: a result holding NaN or an infinity is answered with an internal error."""
    if not replies:
        return b""
    try:
        return _line(replies, batch)
    except ValueError:  # json.dumps(allow_nan=False): a non-finite number in a result
        return _line([_finite(reply) for reply in replies], batch)


def _finite(reply: Reply) -> Reply:
    try:
        _line([reply], batch=False)
    except ValueError:
        request_id = reply.id if _is_id(reply.id) else None
        reason = "the result holds a number JSON cannot carry (NaN or an infinity)"
        return error_reply(request_id, INTERNAL_ERROR, "Internal error", reason)
    return reply


def _line(replies: list[Reply], batch: bool) -> bytes:
    """``ValueError`` where the replies hold NaN or an infinity (no JSON has them)."""
    doc: Any = [r.to_json() for r in replies] if batch else replies[0].to_json()
    try:
        text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (a request may carry "\udcff", a path may hold undecodable
        # bytes) has no UTF-8 form: escape everything non-ASCII instead, still valid JSON.
        data = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode("ascii")
    return data + b"\n"


# -- parameters --------------------------------------------------------------------------------


@attrs.frozen
class Param:
    name: str
    kind: type | tuple[type, ...]
    required: bool = True


Signature = tuple[Param, ...]


def _type_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in kinds))


def check_params(params: dict[str, Any] | list[Any], signature: Signature) -> dict[str, Any]:
    """Named arguments from ``params`` (by name, or by position in an array), or
    ``RpcError(-32602)`` saying what is missing, unknown or of the wrong type."""
    if isinstance(params, list):
        if len(params) > len(signature):
            raise invalid_params(f"at most {len(signature)} positional params")
        named = {p.name: v for p, v in zip(signature, params, strict=False)}
    else:
        named = dict(params)
    known = {p.name for p in signature}
    unknown = sorted(set(named) - known)
    if unknown:
        raise invalid_params(f"unknown param(s): {', '.join(unknown)}")
    for p in signature:
        if p.name not in named:
            if p.required:
                raise invalid_params(f"missing param: {p.name}")
            continue
        value = named[p.name]
        kinds = p.kind if isinstance(p.kind, tuple) else (p.kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise invalid_params(f"{p.name} must be {_type_name(p.kind)}")
        if not isinstance(value, kinds):
            raise invalid_params(f"{p.name} must be {_type_name(p.kind)}")
    return named
