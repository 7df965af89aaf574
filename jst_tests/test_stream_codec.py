"""The streaming codec (0x40-0x44), the byte-range parser and the interval set, sans I/O."""

from __future__ import annotations

import itertools
import json
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jst.daemon import streamwire, wire
from jst.daemon.intervals import IntervalSet
from jst.daemon.streamhttp import UNSATISFIABLE, parse_range, response_headers
from jst.daemon.streams import content_type_for


def open_frame(stream_id: int, body: object, raw: bytes | None = None) -> wire.Frame:
    payload = struct.pack("<I", stream_id) + (json.dumps(body).encode() if raw is None else raw)
    return wire.Frame(1, 0x40, 9, payload)


def test_stream_open_parses_every_field() -> None:
    body = {
        "root_key": "k",
        "path": "a/b.mp4",
        "length": 100,
        "have": [[0, 10], [50, 100]],
        "content_type": "video/mp4",
        "future_field": True,
    }
    assert streamwire.parse_stream_frame(open_frame(7, body)) == streamwire.StreamOpen(
        7, "k", "a/b.mp4", 100, ((0, 10), (50, 100)), "video/mp4"
    )
    minimal = {"root_key": "k", "path": "x", "length": 0}
    assert streamwire.parse_stream_frame(open_frame(1, minimal)) == streamwire.StreamOpen(
        1, "k", "x", 0, (), None
    )


@pytest.mark.parametrize(
    "body",
    [
        {"path": "x", "length": 1},
        {"root_key": 1, "path": "x", "length": 1},
        {"root_key": "k", "length": 1},
        {"root_key": "k", "path": "x"},
        {"root_key": "k", "path": "x", "length": -1},
        {"root_key": "k", "path": "x", "length": True},
        {"root_key": "k", "path": "x", "length": 1.5},
        {"root_key": "k", "path": "x", "length": 2**64},
        {"root_key": "k", "path": "x", "length": 10, "have": [[5, 4]]},
        {"root_key": "k", "path": "x", "length": 10, "have": [[0, 11]]},
        {"root_key": "k", "path": "x", "length": 10, "have": [[0]]},
        {"root_key": "k", "path": "x", "length": 10, "have": {"0": 1}},
        {"root_key": "k", "path": "x", "length": 10, "content_type": "a\r\nx-evil: 1"},
        {"root_key": "k", "path": "x", "length": 10, "content_type": ""},
        {"root_key": "k", "path": "x", "length": 10, "content_type": "é"},
        {"root_key": "k", "path": "x", "length": 10, "content_type": " video/mp4"},
        {"root_key": "k", "path": "x", "length": 10, "content_type": "video/mp4\t"},
        [1, 2],
        "text",
    ],
)
def test_stream_open_refuses_bad_fields_with_a_reason(body: object) -> None:
    result = streamwire.parse_stream_frame(open_frame(3, body))
    assert isinstance(result, streamwire.OpenRefused)
    assert result.stream_id == 3
    assert result.reason


@pytest.mark.parametrize("raw", [b"{", b"\xff\xfe", b"NaN", b"[" * 100_000, b"1" * 5000])
def test_stream_open_refuses_bad_json(raw: bytes) -> None:
    assert isinstance(
        streamwire.parse_stream_frame(open_frame(3, None, raw)), streamwire.OpenRefused
    )


def test_have_close_and_daemon_opcodes() -> None:
    have = wire.Frame(1, 0x42, 0, struct.pack("<IQQQQ", 5, 0, 10, 20, 30))
    assert streamwire.parse_stream_frame(have) == streamwire.StreamHave(5, ((0, 10), (20, 30)))
    assert streamwire.parse_stream_frame(wire.Frame(1, 0x42, 0, struct.pack("<I", 5))) == (
        streamwire.StreamHave(5, ())
    )
    assert streamwire.parse_stream_frame(wire.Frame(1, 0x44, 0, struct.pack("<I", 5))) == (
        streamwire.StreamClose(5)
    )
    for opcode in (0x41, 0x43):
        got = streamwire.parse_stream_frame(wire.Frame(1, opcode, 0, b"\0" * 20))
        assert got == wire.UnknownOpcode(opcode)


@pytest.mark.parametrize(
    ("opcode", "payload"),
    [
        (0x40, b"abc"),
        (0x42, b"abc"),
        (0x42, struct.pack("<IQ", 1, 5)),  # half a pair
        (0x42, struct.pack("<IQQ", 1, 9, 5)),  # backwards pair
        (0x44, b""),
    ],
)
def test_malformed_stream_frames_are_ignored(opcode: int, payload: bytes) -> None:
    assert streamwire.parse_stream_frame(wire.Frame(1, opcode, 0, payload)) is None


@given(st.integers(0x40, 0x44), st.binary(max_size=200))
def test_no_payload_makes_the_codec_raise(opcode: int, payload: bytes) -> None:
    streamwire.parse_stream_frame(wire.Frame(1, opcode, 1, payload))


def test_encoders_match_the_spec_layout() -> None:
    assert streamwire.encode_stream_opened(9, 7, 0, "http://x") == (
        bytes.fromhex("01 41 00 00 09 00 00 00 07 00 00 00 00") + b"http://x"
    )
    assert streamwire.encode_stream_need(7, 1, 2**40) == bytes.fromhex(
        "01 43 00 00 00 00 00 00 07 00 00 0001 00 00 00 00 00 00 00 00 00 00 00 00 01 00 00"
    )


@pytest.mark.parametrize(
    ("header", "length", "expected"),
    [
        (None, 100, None),
        (b"bytes=0-", 100, (0, 100)),
        (b"bytes=10-19", 100, (10, 20)),
        (b"bytes=10-1000", 100, (10, 100)),
        (b"bytes=99-99", 100, (99, 100)),
        (b"bytes=-10", 100, (90, 100)),
        (b"bytes=-1000", 100, (0, 100)),
        (b"bytes=100-", 100, UNSATISFIABLE),
        (b"bytes=150-160", 100, UNSATISFIABLE),
        (b"bytes=-0", 100, UNSATISFIABLE),
        (b"bytes=0-", 0, UNSATISFIABLE),
        (b"bytes=-5", 0, UNSATISFIABLE),
        (b"bytes=20-10", 100, None),  # invalid: ignored
        (b"bytes=0-1,5-6", 100, None),  # several ranges: the whole file
        (b"items=0-1", 100, None),
        (b"bytes=-", 100, None),
        (b"bytes=" + b"9" * 30 + b"-", 100, None),
        (b"bytes = 5 - 9", 100, (5, 10)),
    ],
)
def test_range_header_forms(header: bytes | None, length: int, expected: object) -> None:
    assert parse_range(header, length) == expected


def test_response_headers() -> None:
    partial = dict(response_headers(206, 10, 20, 100, "video/mp4"))
    assert partial[b"content-range"] == b"bytes 10-19/100"
    assert partial[b"content-length"] == b"10"
    assert partial[b"accept-ranges"] == b"bytes"
    assert partial[b"cache-control"] == b"no-store"
    assert dict(response_headers(416, 0, 0, 100, "video/mp4"))[b"content-range"] == b"bytes */100"
    assert content_type_for("a/Film.MKV") == "video/x-matroska"
    assert content_type_for("notes.txt") == "application/octet-stream"


def test_interval_set_merges_touching_and_overlapping() -> None:
    s = IntervalSet()
    assert s.add(10, 20)
    assert not s.add(12, 15)
    assert s.add(20, 25)
    assert s.add(0, 5)
    assert list(s) == [(0, 5), (10, 25)]
    assert s.add(3, 11)
    assert list(s) == [(0, 25)]
    assert s.covering_end(24) == 25
    assert s.covering_end(25) is None
    assert s.next_start(25) is None
    assert not s.add(7, 7)


@given(
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 200)), max_size=40),
    st.integers(0, 220),
)
def test_interval_set_equals_a_naive_bitmap(ranges: list[tuple[int, int]], probe: int) -> None:
    s = IntervalSet()
    bitmap = [False] * 220
    for start, end in ranges:
        before = bitmap.copy()
        for i in range(start, end):
            bitmap[i] = True
        assert s.add(start, end) == (bitmap != before)
    assert [pos in s for pos in range(220)] == bitmap
    # Canonical form: sorted, non-empty, neither overlapping nor touching.
    intervals = list(s)
    assert all(a < b for a, b in intervals)
    assert all(b1 < a2 for (_, b1), (a2, _) in itertools.pairwise(intervals))
    run_end = s.covering_end(probe)
    if probe < 220 and bitmap[probe]:
        assert run_end is not None
        assert all(bitmap[probe:run_end])
        assert run_end == 220 or not bitmap[run_end]
    else:
        assert run_end is None
    following = s.next_start(probe)
    expected = next((i for i in range(probe + 1, 220) if bitmap[i] and not bitmap[i - 1]), None)
    assert following == expected
