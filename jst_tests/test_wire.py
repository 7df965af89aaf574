"""The /io codec (jst.daemon.wire) against the spec's byte layouts (§6, Appendix A)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jst.daemon import wire


def hexbytes(text: str) -> bytes:
    return bytes.fromhex(text.replace("|", " "))


def test_appendix_a_tcp_connect_and_replies() -> None:
    request = hexbytes("01 10 00 00 44 33 22 11 | 07 00 00 00 | E1 1A | 31 2E 32 2E 33 2E 34")
    frame = wire.parse_frame(request)
    assert frame is not None
    assert (frame.version, frame.opcode, frame.request_id) == (1, 0x10, 0x11223344)
    assert wire.parse_request(frame) == wire.TcpConnect(7, 6881, "1.2.3.4")
    assert wire.encode_tcp_connected(0x11223344, 7, True) == hexbytes(
        "01 11 00 00 44 33 22 11 | 07 00 00 00 | 00 | 00 00 00 00"
    )
    assert wire.encode_tcp_connected(0x11223344, 7, False) == hexbytes(
        "01 11 00 00 44 33 22 11 | 07 00 00 00 | 01 | 01 00 00 00"
    )


def test_appendix_a_send_recv_close() -> None:
    frame = wire.parse_frame(hexbytes("01 12 00 00 00 00 00 00 | 07 00 00 00 | 68 69"))
    assert frame is not None
    assert wire.parse_request(frame) == wire.TcpSend(7, b"hi")
    assert wire.encode_tcp_recv(7, b"yo") == hexbytes(
        "01 13 00 00 00 00 00 00 | 07 00 00 00 | 79 6F"
    )
    assert wire.encode_tcp_close(7) == hexbytes(
        "01 14 00 00 00 00 00 00 | 07 00 00 00 | 00 | 00 00 00 00"
    )


def test_appendix_a_listen_accept_udp() -> None:
    frame = wire.parse_frame(hexbytes("01 15 00 00 05 00 00 00 | 03 00 00 00 | 00 00"))
    assert frame is not None
    assert wire.parse_request(frame) == wire.TcpListen(3, 0, "")
    assert wire.encode_tcp_listen_result(5, 3, 41307) == hexbytes(
        "01 16 00 00 05 00 00 00 | 03 00 00 00 | 00 | 5B A1 | 00 00 00 00"
    )
    assert wire.encode_tcp_listen_result(5, 3, None) == hexbytes(
        "01 16 00 00 05 00 00 00 | 03 00 00 00 | 01 | 00 00 | 01 00 00 00"
    )
    assert wire.encode_tcp_accept(3, 0x10000, 51000, "10.0.0.2") == hexbytes(
        "01 17 00 00 00 00 00 00 | 03 00 00 00 | 00 00 01 00 | 38 C7 | 31 30 2E 30 2E 30 2E 32"
    )
    assert wire.encode_udp_recv(2, 9000, "127.0.0.1", b"ab") == hexbytes(
        "01 23 00 00 00 00 00 00 | 02 00 00 00 | 28 23 | 09 00 | 31 32 37 2E 30 2E 30 2E 31 | 61 62"
    )


@pytest.mark.parametrize(
    ("opcode", "minimum"),
    [
        (0x10, 6), (0x12, 4), (0x14, 4), (0x19, 5), (0x15, 6), (0x18, 4),
        (0x20, 6), (0x22, 8), (0x24, 4), (0x25, 4), (0x26, 4),
    ],
)  # fmt: skip
def test_minimum_payload_lengths(opcode: int, minimum: int) -> None:
    """§6.10: below the minimum a request is ignored (None), at it it parses."""
    short = wire.Frame(1, opcode, 0, b"\x00" * (minimum - 1))
    assert wire.parse_request(short) is None
    assert wire.parse_request(wire.Frame(1, opcode, 0, b"\x00" * minimum)) is not None


def test_udp_send_layout_and_truncation() -> None:
    payload = b"\x02\0\0\0" + b"\x28\x23" + b"\x09\0" + b"127.0.0.1" + b"data"
    assert wire.parse_request(wire.Frame(1, 0x22, 0, payload)) == wire.UdpSend(
        2, 9000, "127.0.0.1", b"data"
    )
    assert wire.parse_request(wire.Frame(1, 0x22, 0, payload[:12])) is None  # < 8 + L


def test_trailing_bytes_belong_to_the_last_variable_field() -> None:
    close = wire.parse_request(wire.Frame(1, 0x14, 0, b"\x05\0\0\0extra"))
    assert close == wire.TcpClose(5)
    secure = wire.parse_request(wire.Frame(1, 0x19, 0, b"\x05\0\0\0\x03host.example"))
    assert secure == wire.TcpSecure(5, True, "host.example")  # only bit 0 counts


@pytest.mark.parametrize("opcode", [0x02, 0x04, 0x11, 0x13, 0x16, 0x17, 0x7F, 0xE0, 0x01, 0x03])
def test_daemon_opcodes_and_strangers_are_unknown(opcode: int) -> None:
    assert wire.parse_request(wire.Frame(1, opcode, 0, b"")) == wire.UnknownOpcode(opcode)


def test_authenticator_paths() -> None:
    gate = wire.Authenticator(b"s3cret")
    hello = gate.receive(wire.Frame(1, 0x01, 1, b"whatever"))
    assert (hello.reply, hello.close, hello.authenticated) == (
        wire.encode(0x02, 1),
        False,
        False,
    )
    ok = gate.receive(wire.Frame(1, 0x03, 2, b"\x00s3cret\x00ext\x00inst"))
    assert ok.authenticated
    assert ok.reply == wire.encode(0x04, 2, b"\x00")
    legacy = gate.receive(wire.Frame(1, 0x03, 2, b"\x01s3cret"))
    assert legacy.authenticated
    bad = gate.receive(wire.Frame(1, 0x03, 9, b"\x01s3cret\x00"))  # type 1: NUL is part
    assert bad.close
    assert bad.reply == wire.encode(0x04, 9, b"\x01Invalid token")


@given(st.binary(max_size=64))
def test_parsing_never_raises(message: bytes) -> None:
    frame = wire.parse_frame(message)
    if len(message) < 8:
        assert frame is None
        return
    assert frame is not None
    wire.parse_request(frame)
    wire.Authenticator(b"t").receive(frame)


@given(st.integers(0, 2**32 - 1), st.integers(0, 65535), st.text(max_size=40))
def test_connect_round_trip(socket_id: int, port: int, host: str) -> None:
    payload = socket_id.to_bytes(4, "little") + port.to_bytes(2, "little") + host.encode()
    frame = wire.parse_frame(wire.encode(0x10, 1, payload))
    assert frame is not None
    assert wire.parse_request(frame) == wire.TcpConnect(socket_id, port, host)
