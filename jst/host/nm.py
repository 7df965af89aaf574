"""Native Messaging framing (PROTOCOL.md §2.1), sans-I/O.

A frame is a 4-byte length in native byte order (little-endian on every platform
Chrome supports; we always use ``<I``) followed by exactly that many bytes of UTF-8 JSON.

Theory of operation
-------------------
``FrameDecoder`` is fed whatever bytes stdin produced and hands back complete frame
bodies, one at a time; it never blocks and never loses a partial frame, so the task
that owns stdin can be the only reader and no race can desynchronise the framing
(§9.1). End of input is reported with ``end_of_input()``: clean between frames,
``TruncatedFrame`` inside one (§2.1 "EOF inside a body = read error").

``encode_frame`` serialises one message compactly and refuses, before anything is
written, a frame Chrome would reject: Chrome drops the whole connection when a
host→browser message exceeds 1 MiB, so an oversized message must become an error
response, never a write.

Limits
------
* Inbound: 10 MiB, the original's limit (§2.1). Chrome itself caps extension→host
  messages at 64 MiB, but no request of this protocol is more than a few hundred bytes.
  A length over the cap is fatal: the stream cannot be resynchronised after it.
* Outbound: 1 MiB (1,048,576 bytes of JSON), Chrome's limit.
"""

from __future__ import annotations

import json
import struct
from typing import Any

HEADER = struct.Struct("<I")
MAX_INBOUND = 10 * 1024 * 1024
MAX_OUTBOUND = 1024 * 1024


class NativeMessagingError(Exception):
    """Root of the framing errors."""


class RemoteFramingError(NativeMessagingError):
    """The browser side sent something that ends the stream (fatal for the host)."""


class FrameTooLarge(RemoteFramingError):
    def __init__(self, length: int) -> None:
        super().__init__(f"inbound frame of {length} bytes exceeds the {MAX_INBOUND}-byte limit")
        self.length = length


class TruncatedFrame(RemoteFramingError):
    def __init__(self, have: int, want: int) -> None:
        super().__init__(f"end of input inside a frame ({have} of {want} bytes)")


class OutboundTooLarge(NativeMessagingError):
    """We were about to send a frame Chrome would refuse (it would drop the port)."""

    def __init__(self, length: int) -> None:
        super().__init__(f"message of {length} bytes exceeds Chrome's {MAX_OUTBOUND}-byte limit")
        self.length = length


class FrameDecoder:
    """Split a byte stream into frame bodies. Feed with ``receive_data``."""

    def __init__(self, max_frame: int = MAX_INBOUND) -> None:
        self._buffer = bytearray()
        self._max_frame = max_frame
        self._want: int | None = None  # body length of the frame in progress

    def receive_data(self, data: bytes) -> None:
        self._buffer += data

    def next_frame(self) -> bytes | None:
        """The next complete body, or ``None`` until more data arrives.

        Raises ``FrameTooLarge`` as soon as a length prefix over the cap is seen.
        """
        if self._want is None:
            if len(self._buffer) < HEADER.size:
                return None
            (length,) = HEADER.unpack_from(self._buffer)
            if length > self._max_frame:
                raise FrameTooLarge(length)
            del self._buffer[: HEADER.size]
            self._want = length
        if len(self._buffer) < self._want:
            return None
        body = bytes(self._buffer[: self._want])
        del self._buffer[: self._want]
        self._want = None
        return body

    def end_of_input(self) -> None:
        """The stream ended: fine between frames, ``TruncatedFrame`` inside one."""
        if self._want is not None:
            raise TruncatedFrame(len(self._buffer), self._want)
        if self._buffer:
            raise TruncatedFrame(len(self._buffer), HEADER.size)


def encode_json(message: Any) -> bytes:
    """Compact JSON as serde_json writes it: no spaces, non-ASCII kept as UTF-8.

    A string holding a lone surrogate (an ``id`` sent as ``"\\ud800"``, echoed back) has
    no UTF-8 form; such a message is written with every non-ASCII character escaped,
    which is the same JSON value and valid UTF-8.
    """
    text = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(message, separators=(",", ":")).encode("ascii")


def encode_frame(message: Any) -> bytes:
    """Length prefix + compact JSON; ``OutboundTooLarge`` instead of an unsendable frame."""
    body = encode_json(message)
    if len(body) > MAX_OUTBOUND:
        raise OutboundTooLarge(len(body))
    return HEADER.pack(len(body)) + body
