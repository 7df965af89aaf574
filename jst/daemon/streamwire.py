"""The streaming opcodes of ``/io`` (0x40-0x44, STREAMING.md §1), sans-I/O.

Beside ``wire.py`` and under the same rule: nothing here does I/O or raises on bad
input. ``parse_stream_frame`` turns an authenticated frame with one of these opcodes
into a request, ``None`` ("ignore it": a payload too short to carry a stream id, a
STREAM_HAVE whose pairs do not add up), an ``OpenRefused`` (a STREAM_OPEN that names a
stream id but whose JSON is unusable: the client gets STREAM_OPENED with a failure
status and the reason), or ``wire.UnknownOpcode`` for the two daemon→client opcodes.

STREAM_OPEN's JSON is checked strictly, because its values end up in HTTP headers and
file offsets: integers are real JSON integers within u64 (``true`` is not ``1``), every
``have`` pair is ``0 <= start <= end <= length``, and ``content_type`` is visible ASCII
of bounded size (it becomes the ``Content-Type`` header verbatim, so a CR/LF in it would
otherwise split the response).
"""

from __future__ import annotations

import enum
import json
import struct
from typing import Any

import attrs

from jst.daemon import wire
from jst.daemon.http import is_visible_ascii
from jst.rpcinfo import U64_MAX


class StreamOp(enum.IntEnum):
    STREAM_OPEN = 0x40
    STREAM_OPENED = 0x41
    STREAM_HAVE = 0x42
    STREAM_NEED = 0x43
    STREAM_CLOSE = 0x44


STREAM_OPCODES = frozenset(int(op) for op in StreamOp)


class OpenStatus(enum.IntEnum):
    """STREAM_OPENED's status byte: 0 is success, every other value comes with a reason."""

    OK = 0
    INVALID_REQUEST = 1  # malformed JSON or fields
    UNKNOWN_ROOT = 2
    INVALID_PATH = 3  # the §5.6 rules refuse it, or it leads out of the root
    DUPLICATE_ID = 4
    TOO_MANY_STREAMS = 5
    ROOT_UNAVAILABLE = 6  # the root folder is missing (an unplugged drive)


# A content type longer than this is not a media type; refusing it keeps headers small.
MAX_CONTENT_TYPE = 255

_U32 = struct.Struct("<I")
_U64_PAIR = struct.Struct("<QQ")
_NEED = struct.Struct("<IQQ")


@attrs.frozen
class StreamOpen:
    stream_id: int
    root_key: str
    path: str
    length: int
    have: tuple[tuple[int, int], ...]
    content_type: str | None


@attrs.frozen
class OpenRefused:
    """A STREAM_OPEN with a usable stream id and unusable JSON: reply with ``reason``."""

    stream_id: int
    reason: str


@attrs.frozen
class StreamHave:
    stream_id: int
    ranges: tuple[tuple[int, int], ...]  # half-open, start <= end


@attrs.frozen
class StreamClose:
    stream_id: int


StreamRequest = StreamOpen | OpenRefused | StreamHave | StreamClose | wire.UnknownOpcode


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _is_u64(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= U64_MAX


def _parse_open(payload: bytes) -> StreamOpen | OpenRefused | None:
    if len(payload) < 4:
        return None
    stream_id = _U32.unpack_from(payload)[0]

    def refuse(reason: str) -> OpenRefused:
        return OpenRefused(stream_id, reason)

    try:
        obj = json.loads(payload[4:].decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return refuse("invalid JSON")
    if not isinstance(obj, dict):
        return refuse("the request must be a JSON object")
    root_key, path, length = obj.get("root_key"), obj.get("path"), obj.get("length")
    if not isinstance(root_key, str):
        return refuse("missing or invalid field `root_key`")
    if not isinstance(path, str):
        return refuse("missing or invalid field `path`")
    if not _is_u64(length):
        return refuse("missing or invalid field `length`")
    assert isinstance(length, int)
    raw_have = obj.get("have", [])
    if not isinstance(raw_have, list):
        return refuse("invalid field `have`")
    have: list[tuple[int, int]] = []
    for pair in raw_have:
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not all(_is_u64(v) for v in pair)
            or not pair[0] <= pair[1] <= length
        ):
            return refuse("invalid field `have`: pairs [start, end] within length")
        have.append((pair[0], pair[1]))
    content_type = obj.get("content_type")
    if content_type is not None and not (
        isinstance(content_type, str)
        and 0 < len(content_type) <= MAX_CONTENT_TYPE
        and is_visible_ascii(content_type.encode("utf-8"))
        and content_type == content_type.strip(" \t")  # no header value has outer blanks
    ):
        return refuse("invalid field `content_type`")
    return StreamOpen(stream_id, root_key, path, length, tuple(have), content_type)


def _parse_have(payload: bytes) -> StreamHave | None:
    if len(payload) < 4 or (len(payload) - 4) % _U64_PAIR.size:
        return None
    ranges = tuple(_U64_PAIR.iter_unpack(payload[4:]))
    if any(start > end for start, end in ranges):
        return None  # strict: one backwards pair makes the whole frame suspect
    return StreamHave(_U32.unpack_from(payload)[0], ranges)


def parse_stream_frame(frame: wire.Frame) -> StreamRequest | None:
    """The request in an authenticated 0x40-0x44 frame (see the module notes)."""
    opcode = frame.opcode
    if opcode == StreamOp.STREAM_OPEN:
        return _parse_open(frame.payload)
    if opcode == StreamOp.STREAM_HAVE:
        return _parse_have(frame.payload)
    if opcode == StreamOp.STREAM_CLOSE:
        if len(frame.payload) < 4:
            return None
        return StreamClose(_U32.unpack_from(frame.payload)[0])
    return wire.UnknownOpcode(opcode)  # OPENED and NEED go only daemon -> client


def encode_stream_opened(request_id: int, stream_id: int, status: int, text: str) -> bytes:
    payload = _U32.pack(stream_id) + bytes((status,)) + text.encode("utf-8")
    return wire.encode(StreamOp.STREAM_OPENED, request_id, payload)


def encode_stream_need(stream_id: int, start: int, end: int) -> bytes:
    return wire.encode(StreamOp.STREAM_NEED, 0, _NEED.pack(stream_id, start, end))
