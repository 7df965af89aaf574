"""A test client for the daemon's ``/io`` WebSocket, plus loopback peers to talk to.

The client speaks through trio-websocket (an independent WebSocket implementation) and
builds its frames by hand with ``struct``, not with ``jst.daemon.wire``, so the codec is
checked against the spec's byte layouts rather than against itself.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import attrs
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

# Opcodes, spelled out from PROTOCOL.md §6.3.
HELLO, SERVER_HELLO, AUTH, AUTH_RESULT, ERROR = 0x01, 0x02, 0x03, 0x04, 0x7F
TCP_CONNECT, TCP_CONNECTED, TCP_SEND, TCP_RECV, TCP_CLOSE = 0x10, 0x11, 0x12, 0x13, 0x14
TCP_LISTEN, TCP_LISTEN_RESULT, TCP_ACCEPT, TCP_STOP_LISTEN = 0x15, 0x16, 0x17, 0x18
TCP_SECURE, TCP_SECURED = 0x19, 0x1A
UDP_BIND, UDP_BOUND, UDP_SEND, UDP_RECV, UDP_CLOSE = 0x20, 0x21, 0x22, 0x23, 0x24
UDP_JOIN, UDP_LEAVE = 0x25, 0x26

WAIT = 5.0  # seconds any single expected frame may take


def frame(opcode: int, request_id: int = 0, payload: bytes = b"", version: int = 1) -> bytes:
    return struct.pack("<BBHI", version, opcode, 0, request_id) + payload


@attrs.frozen
class Frame:
    opcode: int
    request_id: int
    payload: bytes

    @property
    def socket_id(self) -> int:
        return int(struct.unpack_from("<I", self.payload)[0])

    @property
    def data(self) -> bytes:
        return self.payload[4:]


def parse(message: bytes) -> Frame:
    version, opcode, flags, request_id = struct.unpack_from("<BBHI", message)
    assert (version, flags) == (1, 0), message[:8]
    return Frame(opcode, request_id, message[8:])


@attrs.define
class IoClient:
    ws: WebSocketConnection
    backlog: list[Frame] = attrs.field(factory=list)

    async def send(self, opcode: int, request_id: int = 0, payload: bytes = b"") -> None:
        await self.ws.send_message(frame(opcode, request_id, payload))

    async def next(self, within: float = WAIT) -> Frame:
        if self.backlog:
            return self.backlog.pop(0)
        with trio.fail_after(within):
            while True:
                message = await self.ws.get_message()
                if isinstance(message, bytes):
                    return parse(message)

    async def expect(self, opcode: int, socket_id: int | None = None) -> Frame:
        """The next frame with ``opcode`` (and socket id); others are kept for later."""
        for index, held in enumerate(self.backlog):
            if held.opcode == opcode and (socket_id is None or held.socket_id == socket_id):
                return self.backlog.pop(index)
        with trio.fail_after(WAIT):
            while True:
                message = await self.ws.get_message()
                if not isinstance(message, bytes):
                    continue
                got = parse(message)
                if got.opcode == opcode and (socket_id is None or got.socket_id == socket_id):
                    return got
                self.backlog.append(got)

    async def authenticate(self, token: str) -> None:
        await self.send(HELLO, 1)
        assert (await self.next()).opcode == SERVER_HELLO
        await self.send(AUTH, 2, b"\x00" + token.encode() + b"\x00\x00")
        result = await self.next()
        assert (result.opcode, result.request_id, result.payload) == (AUTH_RESULT, 2, b"\x00")

    # -- requests ------------------------------------------------------------------------

    async def connect(self, sid: int, port: int, host: str = "127.0.0.1", rid: int = 7) -> bool:
        await self.send(TCP_CONNECT, rid, struct.pack("<IH", sid, port) + host.encode())
        reply = await self.expect(TCP_CONNECTED, sid)
        assert reply.request_id == rid
        status, err = struct.unpack_from("<BI", reply.payload, 4)
        assert (status, err) in ((0, 0), (1, 1)), reply
        return bool(status == 0)

    async def tcp_send(self, sid: int, data: bytes) -> None:
        await self.send(TCP_SEND, 0, struct.pack("<I", sid) + data)

    async def receive_exactly(self, sid: int, size: int) -> bytes:
        got = b""
        while len(got) < size:
            got += (await self.expect(TCP_RECV, sid)).data
        return got

    async def expect_close(self, sid: int) -> None:
        closed = await self.expect(TCP_CLOSE, sid)
        assert closed.request_id == 0
        assert closed.payload == struct.pack("<IBI", sid, 0, 0)

    async def listen(self, sid: int, port: int = 0, address: str = "127.0.0.1") -> int | None:
        await self.send(TCP_LISTEN, 9, struct.pack("<IH", sid, port) + address.encode())
        reply = await self.expect(TCP_LISTEN_RESULT, sid)
        status, bound, err = struct.unpack_from("<BHI", reply.payload, 4)
        assert reply.request_id == 9
        if status == 0:
            assert err == 0
            assert bound != 0
            return int(bound)
        assert (bound, err) == (0, 1)
        return None

    async def udp_bind(self, sid: int, port: int = 0, address: str = "127.0.0.1") -> int | None:
        await self.send(UDP_BIND, 11, struct.pack("<IH", sid, port) + address.encode())
        reply = await self.expect(UDP_BOUND, sid)
        status, bound, err = struct.unpack_from("<BHI", reply.payload, 4)
        assert reply.request_id == 11
        return int(bound) if status == 0 and err == 0 else None

    async def udp_send(self, sid: int, host: str, port: int, data: bytes) -> None:
        address = host.encode()
        payload = struct.pack("<IHH", sid, port, len(address)) + address + data
        await self.send(UDP_SEND, 0, payload)


@asynccontextmanager
async def io_session(port: int, token: str | None = None) -> AsyncIterator[IoClient]:
    """An ``/io`` WebSocket (authenticated when ``token`` is given)."""
    url = f"ws://127.0.0.1:{port}/io"
    async with open_websocket_url(url, max_message_size=64 * 1024 * 1024) as ws:
        client = IoClient(ws)
        if token is not None:
            await client.authenticate(token)
        yield client


# -- loopback peers ---------------------------------------------------------------------


async def echo_handler(stream: trio.SocketStream) -> None:
    try:
        async for data in stream:
            await stream.send_all(data)
    except trio.BrokenResourceError:
        pass


async def start_tcp_server(
    nursery: trio.Nursery, handler: Callable[[trio.SocketStream], Awaitable[object]]
) -> int:
    """Serve ``handler`` on 127.0.0.1, ephemeral port; returns the port."""
    serve = functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
    listeners = await nursery.start(serve)
    return int(listeners[0].socket.getsockname()[1])
