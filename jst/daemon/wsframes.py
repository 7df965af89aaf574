"""RFC 6455 frames for the server side, sans-I/O: parse client frames, build server frames.

Why not wsproto here (it still knew nothing else of the connection: the handshake is
h11's, in ``server.py``): the ``/io`` data path is one binary message per socket chunk,
and wsproto spends tens of microseconds of Python per frame (events, a per-frame masker
in pure Python, a bytearray buffer copied on every call). This module does the least
per frame: one header parse with ``struct``, unmasking in C (``websockets``' SIMD
``apply_mask``, or one big-integer XOR when that package is missing), and a whole
unfragmented message is handed out without another copy.

Strict, as a server must be (RFC 6455 §5): client frames must be masked; RSV bits set
(no extension is negotiated), reserved opcodes, non-minimal or 64-bit-MSB lengths,
fragmented or oversized control frames, a continuation without a start, a new data
message inside a fragmented one, a Close payload of one byte or with a code that may
not be sent, all fail the connection with 1002; invalid UTF-8 in a text message or a
Close reason with 1007; a message over ``max_message`` with 1009 *as soon as its
header announces it*, so nothing of an oversized message is buffered.

``FrameParser.receive`` never raises: a protocol failure is reported as a ``Fail``
event (close code), after which the parser accepts nothing more.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import struct
from collections.abc import Callable

import attrs


def _load_c_apply_mask() -> Callable[[bytes | bytearray | memoryview, bytes], bytes] | None:
    """``websockets.speedups.apply_mask`` (C, SIMD where the CPU has it: ~1 µs per 16 KiB
    instead of ~45), loaded by itself: importing the ``websockets`` package first would
    cost ~50 ms of start-up (it reads its distribution metadata)."""
    try:
        package = importlib.util.find_spec("websockets")
        if package is None or not package.submodule_search_locations:
            return None
        for folder in package.submodule_search_locations:
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                path = os.path.join(folder, "speedups" + suffix)
                if not os.path.exists(path):
                    continue
                spec = importlib.util.spec_from_file_location("websockets.speedups", path)
                if spec is None or spec.loader is None:
                    continue
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                function: Callable[[bytes | bytearray | memoryview, bytes], bytes]
                function = module.apply_mask
                return function
    except (ImportError, OSError, AttributeError):
        pass
    return None  # pure Python below: slower, same result


_c_apply_mask = _load_c_apply_mask()

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_DATA = 1007
CLOSE_MESSAGE_TOO_BIG = 1009

_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")


def apply_mask(data: bytes | bytearray | memoryview, mask: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``mask`` repeated (RFC 6455 §5.3)."""
    if _c_apply_mask is not None:
        return _c_apply_mask(data, mask)
    size = len(data)
    if not size:
        return b""
    key = int.from_bytes(mask * ((size + 3) // 4), "little") & ((1 << (8 * size)) - 1)
    return (int.from_bytes(data, "little") ^ key).to_bytes(size, "little")


# -- events ------------------------------------------------------------------------------


@attrs.frozen
class Ping:
    payload: bytes


@attrs.frozen
class Close:
    """The peer's Close frame; ``code`` is ``None`` for an empty one (no status)."""

    code: int | None
    reason: str


@attrs.frozen
class Fail:
    """The connection must be failed with this close code; nothing more is parsed."""

    code: int
    why: str


# A binary message is delivered as ``bytes``, a text message as ``str``; pongs are dropped.
Event = bytes | str | Ping | Close | Fail


def _close_code_allowed(code: int) -> bool:
    """Codes a peer may send in a Close frame (RFC 6455 §7.4, IANA registry)."""
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014) or (
        3000 <= code <= 4999
    )


class FrameParser:
    """Client-to-server frames → events. Feed bytes with ``receive``, in order."""

    def __init__(self, max_message: int) -> None:
        self.max_message = max_message  # may be raised later (after authentication)
        self._buffer = bytearray()
        self._failed = False
        # The fragmented message being assembled, if any.
        self._message_opcode: int | None = None
        self._fragments: list[bytes] = []
        self._fragments_size = 0

    def receive(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Parse what ``data`` completes; keeps the rest for the next call."""
        if self._failed:
            return []
        buffer = self._buffer
        events: list[Event] = []
        if buffer:
            buffer += data
            view = memoryview(buffer)
        else:
            view = memoryview(data)
        end = len(view)
        pos = 0
        while end - pos >= 2:
            b0 = view[pos]
            b1 = view[pos + 1]
            length = b1 & 0x7F
            head = 6  # 2 + mask key
            if length == 126:
                head = 8
                if end - pos < head:
                    break
                length = _U16.unpack_from(view, pos + 2)[0]
                if length < 126:
                    return self._fail(events, CLOSE_PROTOCOL_ERROR, "non-minimal length")
            elif length == 127:
                head = 14
                if end - pos < head:
                    break
                length = _U64.unpack_from(view, pos + 2)[0]
                if length < 0x10000 or length >> 63:
                    return self._fail(events, CLOSE_PROTOCOL_ERROR, "bad 64-bit length")
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            if b0 & 0x70:
                return self._fail(events, CLOSE_PROTOCOL_ERROR, "reserved bits set")
            if not b1 & 0x80:
                return self._fail(events, CLOSE_PROTOCOL_ERROR, "unmasked client frame")
            if opcode >= 0x8:
                if opcode > OP_PONG:
                    return self._fail(events, CLOSE_PROTOCOL_ERROR, "reserved opcode")
                if not fin or length > 125:
                    return self._fail(events, CLOSE_PROTOCOL_ERROR, "bad control frame")
            elif opcode > OP_BINARY:
                return self._fail(events, CLOSE_PROTOCOL_ERROR, "reserved opcode")
            elif opcode == OP_CONTINUATION:
                if self._message_opcode is None:
                    return self._fail(events, CLOSE_PROTOCOL_ERROR, "continuation of nothing")
                if self._fragments_size + length > self.max_message:
                    return self._fail(events, CLOSE_MESSAGE_TOO_BIG, "message too big")
            else:
                if self._message_opcode is not None:
                    return self._fail(events, CLOSE_PROTOCOL_ERROR, "message inside a message")
                if length > self.max_message:
                    return self._fail(events, CLOSE_MESSAGE_TOO_BIG, "message too big")
            if end - pos < head + length:
                break  # wait for the rest (its size is already known to be acceptable)
            start = pos + head
            payload = apply_mask(view[start : start + length], bytes(view[start - 4 : start]))
            pos = start + length
            if opcode == OP_BINARY and fin:
                events.append(payload)  # the hot path: one whole binary message
            elif opcode >= 0x8:
                if opcode == OP_PING:
                    events.append(Ping(payload))
                elif opcode == OP_CLOSE:
                    close = self._parse_close(payload)
                    events.append(close)
                    self._failed = True  # nothing is read after a Close (or a bad one)
                    break
            else:
                if opcode != OP_CONTINUATION:
                    self._message_opcode = opcode
                self._fragments.append(payload)
                self._fragments_size += length
                if fin:
                    message = b"".join(self._fragments)
                    kind = self._message_opcode
                    self._message_opcode = None
                    self._fragments = []
                    self._fragments_size = 0
                    if kind == OP_BINARY:
                        events.append(message)
                    else:
                        try:
                            events.append(message.decode("utf-8"))
                        except UnicodeDecodeError:
                            return self._fail(events, CLOSE_INVALID_DATA, "text is not UTF-8")
        if buffer:
            view.release()
            del buffer[:pos]
        else:
            if pos < end:
                buffer += view[pos:]  # an incomplete frame: keep a copy for the next call
            view.release()
        return events

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame plus fragments of an unfinished message."""
        return len(self._buffer) + self._fragments_size

    def _parse_close(self, payload: bytes) -> Close | Fail:
        if not payload:
            return Close(None, "")
        if len(payload) == 1:
            return Fail(CLOSE_PROTOCOL_ERROR, "one-byte close payload")
        code = _U16.unpack_from(payload)[0]
        if not _close_code_allowed(code):
            return Fail(CLOSE_PROTOCOL_ERROR, f"close code {code} may not be sent")
        try:
            reason = payload[2:].decode("utf-8")
        except UnicodeDecodeError:
            return Fail(CLOSE_INVALID_DATA, "close reason is not UTF-8")
        return Close(code, reason)

    def _fail(self, events: list[Event], code: int, why: str) -> list[Event]:
        self._failed = True
        self._buffer = bytearray()
        self._fragments = []
        self._fragments_size = 0
        events.append(Fail(code, why))
        return events


# -- server-to-client frames (never masked, never fragmented: §6.1) --------------------


def frame_header(opcode: int, length: int) -> bytes:
    if length < 126:
        return bytes((0x80 | opcode, length))
    if length < 0x10000:
        return bytes((0x80 | opcode, 126)) + _U16.pack(length)
    return bytes((0x80 | opcode, 127)) + _U64.pack(length)


def encode_binary(messages: list[bytes]) -> list[bytes]:
    """Header and payload pieces of one binary frame per message, to be joined or sent."""
    pieces: list[bytes] = []
    append = pieces.append
    for message in messages:
        length = len(message)
        if length < 126:
            append(bytes((0x82, length)))
        elif length < 0x10000:
            append(b"\x82\x7e" + _U16.pack(length))
        else:
            append(b"\x82\x7f" + _U64.pack(length))
        append(message)
    return pieces


def encode_close(code: int | None, reason: str = "") -> bytes:
    payload = b"" if code is None else _U16.pack(code) + reason.encode("utf-8")[:123]
    return frame_header(OP_CLOSE, len(payload)) + payload


def encode_pong(payload: bytes) -> bytes:
    return frame_header(OP_PONG, len(payload)) + payload


# A masked client frame, for tests and benchmarks that speak to the daemon by hand.
def encode_client_frame(opcode: int, payload: bytes, mask: bytes, fin: bool = True) -> bytes:
    length = len(payload)
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        head = bytes((first, 0x80 | length))
    elif length < 0x10000:
        head = bytes((first, 0xFE)) + _U16.pack(length)
    else:
        head = bytes((first, 0xFF)) + _U64.pack(length)
    return head + mask + apply_mask(payload, mask)


__all__ = [
    "CLOSE_MESSAGE_TOO_BIG",
    "CLOSE_PROTOCOL_ERROR",
    "Close",
    "Event",
    "Fail",
    "FrameParser",
    "Ping",
    "apply_mask",
    "encode_binary",
    "encode_client_frame",
    "encode_close",
    "encode_pong",
    "frame_header",
]
