"""Sans-I/O HTTP/1.1 framing for the hot path: the common request head, parsed cheaply.

Design notes
------------
h11 is exact but pure Python: about a third of the daemon's CPU per 16 KiB ``GET /read``
went to its state machine (events, header normalisation, per-call checks). The engine's
requests all have the same plain shape: ``HTTP/1.1``, a ``Host``, a few headers, and
either no body or a ``Content-Length`` one. ``parse_simple_head`` parses exactly that
shape with a handful of regular expressions and returns ``None`` for *anything* else
(chunked bodies, ``Expect``, a ``Connection`` other than ``keep-alive`` or ``close``,
``Upgrade``, HTTP/1.0, obsolete
line folding, bare LF line ends, a malformed line, a missing or repeated ``Host`` or
``Content-Length``). The server then serves that one request through h11, unchanged,
so every unusual case keeps h11's semantics and error statuses; the fast path never has
to get them right, only to recognise them.

The grammar below is RFC 9110/9112's, written as h11 writes it (``h11._abnf``): a token
method, a target without whitespace or controls, header names that are tokens, values
of visible characters and obs-text with inner spaces or tabs.

``find_head_end`` is the one place that decides where a head ends and how large it may
be (``MAX_HEAD_SIZE``, answered 431), for the fast path and h11 alike; h11's own limit
only applies to heads that arrive in pieces.
"""

from __future__ import annotations

import re
from http import HTTPStatus

from jst.daemon.http import Request

# A request head larger than this is refused (431); the engine's are a few hundred bytes.
MAX_HEAD_SIZE = 64 * 1024

_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/1\.1")
# Bytes a plain head may hold anywhere: tab, CR/LF, visible ASCII, obs-text. (h11 also
# accepts other control bytes in values; such heads simply take the h11 path.)
_FOREIGN_BYTE = re.compile(rb"[^\t\r\n\x20-\x7e\x80-\xff]")
# Field lines, validated as a block and then split in one call each; linear in the size
# of the head (values are stripped of optional whitespace afterwards, not by the regex,
# which would backtrack quadratically on long runs of spaces).
_FIELD_LINES = re.compile(rb"(?:" + _TOKEN + rb":[^\r\n]*\r\n)*")
_FIELD_LINE = re.compile(rb"(" + _TOKEN + rb"):([^\r\n]*)\r\n")
_DIGITS = re.compile(rb"[0-9]{1,19}")

# Headers whose presence sends the request to h11 (what they ask for is h11's to get right).
_SLOW_HEADERS = frozenset((b"transfer-encoding", b"expect", b"upgrade", b"te"))

REASONS = {status.value: status.phrase.encode("ascii") for status in HTTPStatus}
STATUS_LINES = {code: b"HTTP/1.1 %d %s\r\n" % (code, reason) for code, reason in REASONS.items()}


class HeadTooLarge(Exception):
    """The request head is over ``MAX_HEAD_SIZE`` (answered 431, then the connection closes)."""


def find_head_end(buf: bytes | bytearray, start: int = 0) -> int:
    """Index just past the head's blank line, or -1 if the head is not complete yet.

    ``start``: where new bytes begin (the caller searched the rest before); a head that
    arrives a byte at a time is then scanned once in all, not once per byte.
    Bare-LF line ends (which h11 tolerates) end a head too; such a head is not "simple"
    and goes to h11. Raises ``HeadTooLarge`` once the head is, or must become, too big.
    """
    start = max(0, start - 3)  # a terminator may straddle the old and the new bytes
    end = buf.find(b"\r\n\r\n", start, MAX_HEAD_SIZE + 4)
    if end >= 0:
        return end + 4
    # A head with bare LFs: \n\n or \n\r\n ends it.
    lf = buf.find(b"\n\n", start, MAX_HEAD_SIZE + 2)
    crlf = buf.find(b"\n\r\n", start, MAX_HEAD_SIZE + 3)
    ends = [i + 2 for i in (lf,) if i >= 0] + [i + 3 for i in (crlf,) if i >= 0]
    if ends:
        return min(ends)
    if len(buf) > MAX_HEAD_SIZE:
        raise HeadTooLarge
    return -1


def parse_simple_head(head: bytes) -> tuple[Request, int, bool] | None:
    """(request, content length, close) for a plain HTTP/1.1 head ending in CRLF CRLF,
    else None. ``close``: the client said ``Connection: close`` (the answer is its last:
    a probe such as a first ``GET /health`` is served without loading h11)."""
    first_end = head.find(b"\r\n")
    match = _REQUEST_LINE.fullmatch(head, 0, first_end)
    if match is None or _FOREIGN_BYTE.search(head) is not None:
        return None
    block_end = len(head) - 2
    # CR and LF only as CRLF pairs (a lone one is h11's to judge), then every line a field.
    if head.count(b"\r") != head.count(b"\n") or head.count(b"\r\n") != head.count(b"\n"):
        return None
    if _FIELD_LINES.fullmatch(head, first_end + 2, block_end) is None:
        return None
    headers = []
    length = 0
    seen_host = seen_length = close = False
    for raw_name, raw_value in _FIELD_LINE.findall(head, first_end + 2, block_end):
        name = raw_name.lower()
        value = raw_value.strip(b" \t")
        if name == b"host":
            if seen_host:
                return None
            seen_host = True
        elif name == b"content-length":
            if seen_length or _DIGITS.fullmatch(value) is None:
                return None
            seen_length = True
            length = int(value)
        elif name == b"connection":
            option = value.lower()
            if option == b"close":
                close = True
            elif option != b"keep-alive":
                return None
        elif name in _SLOW_HEADERS:
            return None
        headers.append((name, value))
    if not seen_host:
        return None  # h11 answers 400 (HTTP/1.1 requires Host)
    raw_path, _, query = match[2].partition(b"?")
    return Request(match[1].decode("ascii"), raw_path, query, tuple(headers)), length, close


def encode_head(status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
    """The status line and headers of a response, as h11 writes them."""
    parts = [STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)
