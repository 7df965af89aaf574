"""Native Messaging framing (§2.1), without I/O."""

from __future__ import annotations

import struct

import pytest

from jst.host import nm


def test_appendix_a_frame_bytes() -> None:
    frame = nm.encode_frame({"id": "1", "ok": True, "type": "Empty"})
    assert frame[:4] == bytes.fromhex("23000000")
    assert frame[4:] == b'{"id":"1","ok":true,"type":"Empty"}'


def test_non_ascii_is_sent_as_utf8_not_escaped() -> None:
    frame = nm.encode_frame({"path": "/home/ü/Téléchargements"})
    body = '{"path":"/home/ü/Téléchargements"}'.encode()
    assert frame == struct.pack("<I", len(body)) + body


def test_frames_split_anywhere_are_reassembled_in_order() -> None:
    data = b"".join(nm.encode_frame({"n": n, "pad": "x" * n}) for n in range(50))
    decoder = nm.FrameDecoder()
    bodies = []
    for i in range(0, len(data), 7):  # every frame straddles several feeds
        decoder.receive_data(data[i : i + 7])
        while (body := decoder.next_frame()) is not None:
            bodies.append(body)
    decoder.end_of_input()
    assert [nm.encode_json({"n": n, "pad": "x" * n}) for n in range(50)] == bodies


def test_clients_packing_with_native_order_are_understood() -> None:
    decoder = nm.FrameDecoder()
    decoder.receive_data(struct.pack("=I", 2) + b"{}")
    assert decoder.next_frame() == b"{}"


def test_eof_between_frames_is_clean_and_inside_one_is_an_error() -> None:
    decoder = nm.FrameDecoder()
    decoder.end_of_input()
    decoder.receive_data(struct.pack("<I", 10) + b"{}")
    assert decoder.next_frame() is None
    with pytest.raises(nm.TruncatedFrame):
        decoder.end_of_input()
    partial_prefix = nm.FrameDecoder()
    partial_prefix.receive_data(b"\x05\x00")
    with pytest.raises(nm.TruncatedFrame):
        partial_prefix.end_of_input()


def test_inbound_limit_is_ten_mib_and_fails_on_the_prefix_alone() -> None:
    decoder = nm.FrameDecoder()
    decoder.receive_data(struct.pack("<I", nm.MAX_INBOUND))
    assert decoder.next_frame() is None  # exactly the limit is allowed; waits for the body
    over = nm.FrameDecoder()
    over.receive_data(struct.pack("<I", nm.MAX_INBOUND + 1))
    with pytest.raises(nm.FrameTooLarge):
        over.next_frame()


def test_outbound_limit_refuses_before_writing() -> None:
    fits = {"x": "a" * (nm.MAX_OUTBOUND - 8)}  # {"x":"…"} is 8 bytes of syntax
    assert len(nm.encode_frame(fits)) == nm.MAX_OUTBOUND + 4
    with pytest.raises(nm.OutboundTooLarge):
        nm.encode_frame({"x": "a" * (nm.MAX_OUTBOUND - 7)})
