"""Versioned JSON objects, one per line, with a line limit: sans-I/O framing.

Both control channels frame their messages this way: the host↔io-daemon channel
(``jst/control.py``) and the service↔io-daemon channel (``jst/service/channel.py``).
A line is one JSON object, UTF-8, ``\\n``-terminated, that carries ``"v"``, its
protocol's version.

Errors are raised as the caller's own exception class (``ControlError``,
``ChannelError``): each component keeps its one hierarchy, this module only words the
sentence. Every error means the peer broke the framing and the connection must close.

On the startup path of the host and the daemon: import nothing heavier than ``json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def encode(version: int, fields: Mapping[str, Any]) -> bytes:
    """One line: ``fields`` with ``"v": version`` first, compact, newline-terminated."""
    body = {"v": version, **fields}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def decode(line: bytes, version: int, error: type[Exception]) -> dict[str, Any]:
    """The object on ``line`` (without its newline), or ``error`` saying why not."""
    try:
        obj = json.loads(line)
    # RecursionError: deeply nested arrays, which a peer that is not ours may send
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise error(f"not a JSON line: {exc}") from exc
    if not isinstance(obj, dict):
        raise error("a message must be a JSON object")
    if obj.get("v") != version:
        raise error(f"unsupported protocol version {obj.get('v')!r} (we speak {version})")
    return obj


class LineDecoder(Generic[T]):
    """Split received bytes into lines and ``parse`` each one into a message.

    A line longer than ``max_line`` bytes is an ``error``, whether its newline has come
    (in the same receive, say) or not yet: then the buffer never grows past one receive
    beyond the limit.
    """

    def __init__(self, parse: Callable[[bytes], T], error: type[Exception], max_line: int) -> None:
        self._buffer = bytearray()
        self._parse = parse
        self._error = error
        self._max_line = max_line

    def receive_data(self, data: bytes) -> None:
        self._buffer += data

    def next_message(self) -> T | None:
        """The next whole message, or ``None`` until more data is received."""
        end = self._buffer.find(b"\n")
        if end < 0:
            if len(self._buffer) > self._max_line:
                raise self._error(f"a line longer than {self._max_line} bytes")
            return None
        if end > self._max_line:
            raise self._error(f"a line longer than {self._max_line} bytes")
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        return self._parse(line)
