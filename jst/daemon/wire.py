"""The ``/io`` WebSocket protocol, sans-I/O: envelope, opcodes, payloads (PROTOCOL.md §6).

Every binary WebSocket message is one frame::

    version u8 (=1) | opcode u8 | flags u16 LE | request_id u32 LE | payload

Inbound, ``parse_frame`` splits the envelope, ``Authenticator`` runs the pre-auth state
machine of §6.4, and ``parse_request`` turns an authenticated frame into one of the
request classes below. Outbound, one ``encode_*`` function per daemon→client message
builds the exact bytes. Nothing here does I/O or raises on bad input: a frame that is too
short, or a payload shorter than its opcode's minimum (§6.10), comes back as ``None``
("ignore it"), and an opcode we do not serve comes back as ``UnknownOpcode`` so the
session can answer ``ERROR("Unknown opcode")``. A hostile client therefore cannot reach
an exception through this module.

Strings in payloads are decoded as UTF-8 with replacement: an undecodable host name then
fails to resolve and the client gets a failure status, instead of silence it would have
to time out on.
"""

from __future__ import annotations

import enum
import hmac
import struct
from collections.abc import Callable

import attrs

VERSION = 1
HEADER_SIZE = 8


class Op(enum.IntEnum):
    CLIENT_HELLO = 0x01
    SERVER_HELLO = 0x02
    AUTH = 0x03
    AUTH_RESULT = 0x04
    ERROR = 0x7F
    TCP_CONNECT = 0x10
    TCP_CONNECTED = 0x11
    TCP_SEND = 0x12
    TCP_RECV = 0x13
    TCP_CLOSE = 0x14
    TCP_LISTEN = 0x15
    TCP_LISTEN_RESULT = 0x16
    TCP_ACCEPT = 0x17
    TCP_STOP_LISTEN = 0x18
    TCP_SECURE = 0x19
    TCP_SECURED = 0x1A
    UDP_BIND = 0x20
    UDP_BOUND = 0x21
    UDP_SEND = 0x22
    UDP_RECV = 0x23
    UDP_CLOSE = 0x24
    UDP_JOIN_MULTICAST = 0x25
    UDP_LEAVE_MULTICAST = 0x26


# The four session-ending errors and the one that is not (§6.10).
INVALID_VERSION = "Invalid protocol version"
EMPTY_AUTH = "Empty auth payload"
UNKNOWN_AUTH_TYPE = "Unknown auth type"
AUTH_REQUIRED = "Authentication required"
UNKNOWN_OPCODE = "Unknown opcode"
INVALID_TOKEN = b"Invalid token"

_ENVELOPE = struct.Struct("<BBHI")
_U32 = struct.Struct("<I")
_U32_U16 = struct.Struct("<IH")
_U32_U16_U16 = struct.Struct("<IHH")
_U32_U8_U32 = struct.Struct("<IBI")
_U32_U8 = struct.Struct("<IB")
_U32_U8_U16_U32 = struct.Struct("<IBHI")
_U32_U32_U16 = struct.Struct("<IIH")


@attrs.frozen
class Frame:
    version: int
    opcode: int
    request_id: int
    payload: bytes


def parse_frame(message: bytes | bytearray) -> Frame | None:
    """Split the envelope; ``None`` for a message shorter than 8 bytes (ignored, §6.2)."""
    if len(message) < HEADER_SIZE:
        return None
    version, opcode, _flags, request_id = _ENVELOPE.unpack_from(message)
    return Frame(version, opcode, request_id, bytes(message[HEADER_SIZE:]))


def encode(opcode: int, request_id: int, payload: bytes = b"") -> bytes:
    return _ENVELOPE.pack(VERSION, opcode, 0, request_id) + payload


# ---------------------------------------------------------------------------------------
# Session handshake (§6.4)


@attrs.frozen
class AuthStep:
    """What to do with one pre-auth frame: send ``reply`` (if any), then maybe close."""

    reply: bytes | None
    close: bool = False
    authenticated: bool = False


class Authenticator:
    """The UNAUTHENTICATED state of a session. Feed it frames until ``authenticated``."""

    def __init__(self, token: bytes) -> None:
        # §6.4: tokens are compared as UTF-8 text decoded with replacement.
        self._token = token.decode("utf-8", "replace").encode("utf-8")

    def receive(self, frame: Frame) -> AuthStep:
        rid = frame.request_id
        if frame.version != VERSION:
            return AuthStep(encode_error(rid, INVALID_VERSION), close=True)
        if frame.opcode == Op.CLIENT_HELLO:
            return AuthStep(encode(Op.SERVER_HELLO, rid))
        if frame.opcode != Op.AUTH:
            return AuthStep(encode_error(rid, AUTH_REQUIRED), close=True)
        payload = frame.payload
        if not payload:
            return AuthStep(encode_error(rid, EMPTY_AUTH), close=True)
        if payload[0] == 0:  # token, then NUL-separated ids we do not need on desktop
            token = payload[1:].split(b"\x00", 1)[0]
        elif payload[0] == 1:  # legacy: the whole rest is the token
            token = payload[1:]
        else:
            return AuthStep(encode_error(rid, UNKNOWN_AUTH_TYPE), close=True)
        offered = token.decode("utf-8", "replace").encode("utf-8")
        if hmac.compare_digest(offered, self._token):
            return AuthStep(encode(Op.AUTH_RESULT, rid, b"\x00"), authenticated=True)
        return AuthStep(encode(Op.AUTH_RESULT, rid, b"\x01" + INVALID_TOKEN), close=True)


# ---------------------------------------------------------------------------------------
# Requests (client -> daemon), after authentication


@attrs.frozen
class TcpConnect:
    socket_id: int
    port: int
    host: str


@attrs.frozen
class TcpSend:
    socket_id: int
    data: bytes


@attrs.frozen
class TcpClose:
    socket_id: int


@attrs.frozen
class TcpSecure:
    socket_id: int
    skip_verify: bool
    hostname: str


@attrs.frozen
class TcpListen:
    server_id: int
    port: int
    address: str


@attrs.frozen
class TcpStopListen:
    server_id: int


@attrs.frozen
class UdpBind:
    socket_id: int
    port: int
    address: str


@attrs.frozen
class UdpSend:
    socket_id: int
    port: int
    address: str
    data: bytes


@attrs.frozen
class UdpClose:
    socket_id: int


@attrs.frozen
class UdpMulticast:
    socket_id: int
    group: str
    join: bool


@attrs.frozen
class UnknownOpcode:
    """An opcode the daemon does not accept from a client: answer ERROR, keep going."""

    opcode: int


Request = (
    TcpConnect
    | TcpSend
    | TcpClose
    | TcpSecure
    | TcpListen
    | TcpStopListen
    | UdpBind
    | UdpSend
    | UdpClose
    | UdpMulticast
    | UnknownOpcode
)


Parser = Callable[[bytes], Request | None]


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _id_only(make: Callable[[int], Request]) -> Parser:
    """socket_id (4), extra bytes ignored: TCP_CLOSE, TCP_STOP_LISTEN, UDP_CLOSE."""

    def parse(p: bytes) -> Request | None:
        return make(_U32.unpack_from(p)[0]) if len(p) >= 4 else None

    return parse


def _id_port_text(make: Callable[[int, int, str], Request]) -> Parser:
    """socket_id (4) + port (2) + text (rest): TCP_CONNECT, TCP_LISTEN, UDP_BIND."""

    def parse(p: bytes) -> Request | None:
        if len(p) < 6:
            return None
        sid, port = _U32_U16.unpack_from(p)
        return make(sid, port, _text(p[6:]))

    return parse


def _tcp_send(p: bytes) -> Request | None:
    if len(p) < 4:
        return None
    return TcpSend(_U32.unpack_from(p)[0], p[4:])


def _tcp_secure(p: bytes) -> Request | None:
    if len(p) < 5:
        return None
    sid, flags = _U32_U8.unpack_from(p)
    return TcpSecure(sid, bool(flags & 1), _text(p[5:]))


def _udp_send(p: bytes) -> Request | None:
    if len(p) < 8:
        return None
    sid, port, length = _U32_U16_U16.unpack_from(p)
    if len(p) < 8 + length:
        return None
    return UdpSend(sid, port, _text(p[8 : 8 + length]), p[8 + length :])


def _multicast(join: bool) -> Parser:
    """socket_id (4) + group (rest): UDP_JOIN_MULTICAST, UDP_LEAVE_MULTICAST."""

    def parse(p: bytes) -> Request | None:
        return UdpMulticast(_U32.unpack_from(p)[0], _text(p[4:]), join) if len(p) >= 4 else None

    return parse


_PARSERS: dict[int, Parser] = {
    Op.TCP_CONNECT: _id_port_text(TcpConnect),
    Op.TCP_SEND: _tcp_send,
    Op.TCP_CLOSE: _id_only(TcpClose),
    Op.TCP_SECURE: _tcp_secure,
    Op.TCP_LISTEN: _id_port_text(TcpListen),
    Op.TCP_STOP_LISTEN: _id_only(TcpStopListen),
    Op.UDP_BIND: _id_port_text(UdpBind),
    Op.UDP_SEND: _udp_send,
    Op.UDP_CLOSE: _id_only(UdpClose),
    Op.UDP_JOIN_MULTICAST: _multicast(True),
    Op.UDP_LEAVE_MULTICAST: _multicast(False),
}


def parse_request(frame: Frame) -> Request | None:
    """An authenticated frame's request; ``None`` when its payload is malformed (ignore).

    The caller checks ``frame.version`` first (a wrong version ends the session).
    """
    parser = _PARSERS.get(frame.opcode)
    if parser is None:
        return UnknownOpcode(frame.opcode)
    return parser(frame.payload)


# ---------------------------------------------------------------------------------------
# Replies and events (daemon -> client). Events carry request_id 0 (§6.2).

_TCP_RECV_HEADER = encode(Op.TCP_RECV, 0)
_UDP_RECV_HEADER = encode(Op.UDP_RECV, 0)


def encode_error(request_id: int, message: str) -> bytes:
    return encode(Op.ERROR, request_id, message.encode("utf-8"))


def encode_tcp_connected(request_id: int, socket_id: int, ok: bool) -> bytes:
    status, err = (0, 0) if ok else (1, 1)  # §6.5: the real errno is not reported
    return encode(Op.TCP_CONNECTED, request_id, _U32_U8_U32.pack(socket_id, status, err))


_TCP_RECV_HEAD = struct.Struct("<BBHII")
_TCP_RECV_OP = int(Op.TCP_RECV)


def tcp_recv_header(socket_id: int) -> bytes:
    """The 12 bytes before a TCP_RECV's data (envelope and socket id)."""
    return _TCP_RECV_HEAD.pack(VERSION, _TCP_RECV_OP, 0, 0, socket_id)


def encode_tcp_recv(socket_id: int, data: bytes | bytearray) -> bytes:
    return b"".join((_TCP_RECV_HEADER, _U32.pack(socket_id), data))


def encode_tcp_close(socket_id: int) -> bytes:
    # reason and errno are always 0, as in the original (§6.5, §9.6).
    return encode(Op.TCP_CLOSE, 0, _U32_U8_U32.pack(socket_id, 0, 0))


def encode_tcp_secured(request_id: int, socket_id: int, ok: bool) -> bytes:
    return encode(Op.TCP_SECURED, request_id, _U32_U8.pack(socket_id, 0 if ok else 1))


def _bind_result(opcode: int, request_id: int, socket_id: int, port: int | None) -> bytes:
    """id + status + bound port + errno; ``port`` is ``None`` on failure (§6.7, §6.8)."""
    if port is None:
        payload = _U32_U8_U16_U32.pack(socket_id, 1, 0, 1)
    else:
        payload = _U32_U8_U16_U32.pack(socket_id, 0, port, 0)
    return encode(opcode, request_id, payload)


def encode_tcp_listen_result(request_id: int, server_id: int, port: int | None) -> bytes:
    return _bind_result(Op.TCP_LISTEN_RESULT, request_id, server_id, port)


def encode_tcp_accept(server_id: int, socket_id: int, port: int, ip: str) -> bytes:
    return encode(Op.TCP_ACCEPT, 0, _U32_U32_U16.pack(server_id, socket_id, port) + ip.encode())


def encode_udp_bound(request_id: int, socket_id: int, port: int | None) -> bytes:
    return _bind_result(Op.UDP_BOUND, request_id, socket_id, port)


def encode_udp_recv(socket_id: int, port: int, ip: str, data: bytes) -> bytes:
    address = ip.encode()
    head = _U32_U16_U16.pack(socket_id, port, len(address))
    return b"".join((_UDP_RECV_HEADER, head, address, data))


def encode_udp_close(socket_id: int) -> bytes:
    return encode(Op.UDP_CLOSE, 0, _U32_U8_U32.pack(socket_id, 0, 0))
