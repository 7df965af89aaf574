"""The fast head parser (jst/daemon/http1.py) never disagrees with h11.

Whatever head it accepts, h11 accepts too and reads the same method, target, headers and
body length; everything else it leaves to h11 (returns None). Sans-I/O: no daemon.
"""

from __future__ import annotations

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jst.daemon.http1 import (
    MAX_HEAD_SIZE,
    HeadTooLarge,
    encode_head,
    find_head_end,
    parse_simple_head,
)

ENGINE_HEAD = (
    b"GET /read/0123456789abcdef HTTP/1.1\r\nhost: 127.0.0.1:4000\r\n"
    b"x-jst-auth: secret\r\nx-path-base64: YS5iaW4=\r\nx-offset: 16384\r\nx-length: 16384\r\n\r\n"
)


def h11_view(head: bytes) -> tuple[bytes, bytes, list[tuple[bytes, bytes]], int] | None:
    """What h11 makes of ``head``: (method, target, headers, content length) or None."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return None
    if not isinstance(event, h11.Request):
        return None
    headers = [(bytes(k), bytes(v)) for k, v in event.headers]
    length = next((int(v) for k, v in headers if k == b"content-length"), 0)
    return bytes(event.method), bytes(event.target), headers, length


def assert_agrees(head: bytes) -> None:
    parsed = parse_simple_head(head)
    if parsed is None:
        return
    view = h11_view(head)
    assert view is not None, head
    req, length, _close = parsed
    method, target, headers, h11_length = view
    assert req.method.encode() == method
    assert req.raw_path + (b"?" + req.query if b"?" in target else b"") == target
    assert list(req.headers) == headers
    assert length == h11_length


def test_the_engines_head_takes_the_fast_path() -> None:
    parsed = parse_simple_head(ENGINE_HEAD)
    assert parsed is not None
    assert_agrees(ENGINE_HEAD)
    req, length, close = parsed
    assert (req.method, req.raw_path, length, close) == ("GET", b"/read/0123456789abcdef", 0, False)
    assert req.header(b"x-length") == b"16384"


@pytest.mark.parametrize("value", [b"close", b"Close", b"CLOSE"])
def test_a_request_that_asks_to_close_takes_the_fast_path_and_says_so(value: bytes) -> None:
    head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:1\r\nConnection: " + value + b"\r\n\r\n"
    parsed = parse_simple_head(head)
    assert parsed is not None
    assert parsed[2] is True
    assert_agrees(head)
    keep = parse_simple_head(head.replace(b": " + value, b": keep-alive"))
    assert keep is not None
    assert keep[2] is False


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.0\r\n\r\n",  # HTTP/1.0: h11 decides keep-alive
        b"GET / HTTP/1.1\r\n\r\n",  # no Host: h11 answers 400
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, upgrade\r\n\r\n",
        b"GET /io HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        b"GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\nHost: a\n\n",
    ],
)
def test_anything_unusual_is_left_to_h11(head: bytes) -> None:
    assert parse_simple_head(head) is None


def test_head_end_and_size_limit() -> None:
    assert find_head_end(ENGINE_HEAD + b"GET") == len(ENGINE_HEAD)
    assert find_head_end(ENGINE_HEAD[:-2]) == -1
    assert find_head_end(b"GET / HTTP/1.1\nHost: a\n\nrest") == len(b"GET / HTTP/1.1\nHost: a\n\n")
    with pytest.raises(HeadTooLarge):
        find_head_end(b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HEAD_SIZE + b"\r\n\r\n")
    with pytest.raises(HeadTooLarge):
        find_head_end(b"a" * (MAX_HEAD_SIZE + 1))  # no end yet, and too long already


def test_response_head_is_what_h11_writes() -> None:
    headers = [(b"content-length", b"2"), (b"content-type", b"text/plain")]
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    conn.next_event()
    expected = conn.send(h11.Response(status_code=200, headers=headers, reason=b"OK"))
    assert encode_head(200, headers) == expected


HEADER_NAMES = st.sampled_from(
    [b"host", b"Host", b"content-length", b"x-offset", b"connection", b"x-a", b"te", b"upgrade"]
)
HEADER_VALUES = st.one_of(
    st.sampled_from([b"", b"0", b"12", b"keep-alive", b"close", b" 5 ", b"a\tb", b"\xff"]),
    st.binary(max_size=12),
)


@settings(max_examples=400, deadline=None)
@given(
    method=st.sampled_from([b"GET", b"POST", b"HEAD", b"GET", b"G(T", b""]),
    target=st.one_of(st.sampled_from([b"/", b"/a?b=c", b"/%zz"]), st.binary(max_size=8)),
    version=st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2"]),
    host=st.sampled_from([b"Host: 127.0.0.1:1\r\n", b"host:x\r\n", b""]),
    fields=st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=5),
    separator=st.sampled_from([b":", b": ", b" : ", b":\t"]),
)
def test_fast_parse_agrees_with_h11(
    method: bytes,
    target: bytes,
    version: bytes,
    host: bytes,
    fields: list[tuple[bytes, bytes]],
    separator: bytes,
) -> None:
    lines = [method + b" " + target + b" " + version, *([host[:-2]] if host else [])]
    lines += [name + separator + value for name, value in fields]
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    assert_agrees(head)


TOKEN = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_!#$.~",
    min_size=1,
    max_size=10,
)
VALUE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)


@settings(max_examples=300, deadline=None)
@given(
    target=st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1),
    fields=st.lists(st.tuples(TOKEN, VALUE), max_size=6),
    length=st.none() | st.integers(min_value=0, max_value=10**12),
)
def test_plain_heads_take_the_fast_path_and_agree_with_h11(
    target: str, fields: list[tuple[str, str]], length: int | None
) -> None:
    special = {
        "host",
        "content-length",
        "connection",
        "transfer-encoding",
        "expect",
        "upgrade",
        "te",
    }
    lines = [f"POST {target} HTTP/1.1", "Host: 127.0.0.1:1"]
    lines += [f"{name}: {value}" for name, value in fields if name.lower() not in special]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    assert parse_simple_head(head) is not None
    assert_agrees(head)
