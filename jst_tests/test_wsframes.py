"""The daemon's RFC 6455 frame parser, sans-I/O: what a client frame becomes, and when
the connection must be failed (§5, §7.4). Client frames are built here by hand."""

from __future__ import annotations

import os
import struct

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from jst.daemon import wsframes
from jst.daemon.wsframes import Close, Fail, FrameParser, Ping

MASK = b"\x11\x22\x33\x44"


def masked(payload: bytes, mask: bytes = MASK) -> bytes:
    return bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def client_frame(
    opcode: int, payload: bytes, fin: bool = True, mask: bytes | None = MASK, rsv: int = 0
) -> bytes:
    first = (0x80 if fin else 0) | rsv << 4 | opcode
    size = len(payload)
    mask_bit = 0x80 if mask is not None else 0
    if size < 126:
        head = bytes((first, mask_bit | size))
    elif size < 0x10000:
        head = bytes((first, mask_bit | 126)) + struct.pack("!H", size)
    else:
        head = bytes((first, mask_bit | 127)) + struct.pack("!Q", size)
    if mask is None:
        return head + payload
    return head + mask + masked(payload, mask)


def parse_all(data: bytes, max_message: int = 1 << 20) -> list[wsframes.Event]:
    return FrameParser(max_message).receive(data)


def fail_code(events: list[wsframes.Event]) -> int | None:
    last = events[-1] if events else None
    return last.code if isinstance(last, Fail) else None


def test_binary_text_and_sizes_of_every_length_encoding() -> None:
    for size in (0, 1, 125, 126, 65535, 65536, 200_000):
        payload = os.urandom(size)
        assert parse_all(client_frame(0x2, payload)) == [payload]
    assert parse_all(client_frame(0x1, "héllo".encode())) == ["héllo"]


def test_fragments_with_a_ping_between_them() -> None:
    data = (
        client_frame(0x2, b"abc", fin=False)
        + client_frame(0x9, b"are you there")
        + client_frame(0x0, b"def", fin=False)
        + client_frame(0x0, b"g")
    )
    assert parse_all(data) == [Ping(b"are you there"), b"abcdefg"]


def test_any_split_of_the_stream_gives_the_same_messages() -> None:
    data = client_frame(0x2, b"x" * 300) + client_frame(0x2, b"y" * 70_000) + client_frame(0x9, b"")
    whole = parse_all(data)
    for step in (1, 2, 3, 7, 125, 4096):
        parser = FrameParser(1 << 20)
        events: list[wsframes.Event] = []
        for start in range(0, len(data), step):
            events += parser.receive(data[start : start + step])
        assert events == whole


def test_close_frames() -> None:
    assert parse_all(client_frame(0x8, b"")) == [Close(None, "")]
    assert parse_all(client_frame(0x8, struct.pack("!H", 1000) + b"bye")) == [Close(1000, "bye")]
    assert parse_all(client_frame(0x8, struct.pack("!H", 4000))) == [Close(4000, "")]
    # nothing is parsed after a Close
    assert parse_all(client_frame(0x8, b"") + client_frame(0x2, b"late")) == [Close(None, "")]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        pytest.param(client_frame(0x2, b"x", mask=None), 1002, id="unmasked"),
        pytest.param(client_frame(0x2, b"x", rsv=4), 1002, id="rsv1"),
        pytest.param(client_frame(0x3, b"x"), 1002, id="reserved-data-opcode"),
        pytest.param(client_frame(0xB, b"x"), 1002, id="reserved-control-opcode"),
        pytest.param(client_frame(0x9, b"x" * 126), 1002, id="long-ping"),
        pytest.param(client_frame(0x9, b"x", fin=False), 1002, id="fragmented-ping"),
        pytest.param(client_frame(0x0, b"x"), 1002, id="continuation-of-nothing"),
        pytest.param(
            client_frame(0x2, b"x", fin=False) + client_frame(0x2, b"y"),
            1002,
            id="message-inside-a-message",
        ),
        pytest.param(client_frame(0x8, b"\x03"), 1002, id="one-byte-close"),
        pytest.param(client_frame(0x8, struct.pack("!H", 1005)), 1002, id="close-1005"),
        pytest.param(client_frame(0x8, struct.pack("!H", 999)), 1002, id="close-999"),
        pytest.param(client_frame(0x8, struct.pack("!H", 1000) + b"\xff"), 1007, id="close-reason"),
        pytest.param(client_frame(0x1, b"\xc3\x28"), 1007, id="text-not-utf8"),
        pytest.param(b"\x82\xfe\x00\x05" + MASK + b"hello", 1002, id="non-minimal-16"),
        pytest.param(
            b"\x82\xff" + struct.pack("!Q", 5) + MASK + b"hello", 1002, id="non-minimal-64"
        ),
        pytest.param(b"\x82\xff" + struct.pack("!Q", 1 << 63) + MASK, 1002, id="64-bit-msb"),
    ],
)
def test_protocol_violations_fail_the_connection(data: bytes, code: int) -> None:
    events = parse_all(data)
    assert fail_code(events) == code, events
    assert not any(isinstance(event, bytes) for event in events[:-1])


def test_too_big_is_refused_from_the_header_alone() -> None:
    parser = FrameParser(64 * 1024)
    # Only the header of a 63 MiB frame: refused before any payload byte is buffered.
    header = b"\x82\xff" + struct.pack("!Q", 63 << 20) + MASK
    assert fail_code(parser.receive(header)) == 1009
    assert parser.buffered == 0
    assert parser.receive(b"more") == []  # a failed parser takes nothing more


def test_too_big_across_fragments() -> None:
    parser = FrameParser(64 * 1024)
    events = parser.receive(client_frame(0x2, b"a" * 40_000, fin=False))
    assert events == []
    assert parser.buffered == 40_000
    events = parser.receive(client_frame(0x0, b"b" * 30_000, fin=False))
    assert fail_code(events) == 1009
    assert parser.buffered == 0


def test_the_limit_can_be_raised_later() -> None:
    parser = FrameParser(16)
    parser.max_message = 1 << 20
    payload = b"z" * 100_000
    assert parser.receive(client_frame(0x2, payload)) == [payload]


def test_server_frames() -> None:
    assert wsframes.encode_binary([b"ab"]) == [b"\x82\x02", b"ab"]
    big = b"q" * 70_000
    assert b"".join(wsframes.encode_binary([big])) == b"\x82\x7f" + struct.pack("!Q", 70_000) + big
    assert wsframes.encode_close(1009) == b"\x88\x02\x03\xf1"
    assert wsframes.encode_pong(b"hi") == b"\x8a\x02hi"


@given(st.binary(max_size=3000), st.binary(min_size=4, max_size=4))
def test_mask_matches_the_definition(data: bytes, mask: bytes) -> None:
    assert wsframes.apply_mask(data, mask) == masked(data, mask)


def test_mask_without_the_c_routine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wsframes, "_c_apply_mask", None)
    for size in (0, 1, 3, 4, 5, 16384):
        data = os.urandom(size)
        assert wsframes.apply_mask(data, MASK) == masked(data)


@settings(max_examples=300)
@given(st.binary(max_size=200), st.integers(min_value=1, max_value=50))
def test_parsing_never_raises(data: bytes, step: int) -> None:
    parser = FrameParser(100)
    for start in range(0, len(data), step):
        for event in parser.receive(data[start : start + step]):
            assert isinstance(event, (bytes, str, Ping, Close, Fail))
