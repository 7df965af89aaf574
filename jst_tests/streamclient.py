"""The engine's side of streaming (STREAMING.md §4) for tests and benchmarks.

Frames are built by hand with ``struct`` from the spec's table, not with
``jst.daemon.streamwire``, so the daemon is checked against the spec rather than against
its own codec. ``BodyReader`` is a player's HTTP side: it records the status, headers and
every body byte as they arrive, so a test can see a reader block and wake.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable
from typing import Any

import attrs
import h11
import trio

from jst_tests.daemonproc import ROOT_KEY, RunningDaemon, b64
from jst_tests.httpclient import HttpClient
from jst_tests.ioclient import IoClient

STREAM_OPEN, STREAM_OPENED, STREAM_HAVE, STREAM_NEED, STREAM_CLOSE = 0x40, 0x41, 0x42, 0x43, 0x44
WAIT = 10.0


@attrs.frozen
class Opened:
    status: int
    text: str

    @property
    def url_path(self) -> str:
        assert self.status == 0, self.text
        return "/" + self.text.split("/", 3)[3]

    @property
    def token(self) -> str:
        return self.url_path.rsplit("/", 1)[1]


async def open_stream(
    io: IoClient,
    sid: int,
    path: str,
    length: int,
    have: Iterable[tuple[int, int]] = (),
    root_key: str = ROOT_KEY,
    rid: int = 40,
    **extra: Any,
) -> Opened:
    body = {"root_key": root_key, "path": path, "length": length, "have": [list(r) for r in have]}
    body.update(extra)
    await io.send(STREAM_OPEN, rid, struct.pack("<I", sid) + json.dumps(body).encode())
    return await expect_opened(io, sid, rid)


async def expect_opened(io: IoClient, sid: int, rid: int) -> Opened:
    reply = await io.expect(STREAM_OPENED, sid)
    assert reply.request_id == rid
    status = reply.payload[4]
    return Opened(status, reply.payload[5:].decode())


async def send_have(io: IoClient, sid: int, ranges: Iterable[tuple[int, int]]) -> None:
    pairs = b"".join(struct.pack("<QQ", start, end) for start, end in ranges)
    await io.send(STREAM_HAVE, 0, struct.pack("<I", sid) + pairs)


async def close_stream(io: IoClient, sid: int) -> None:
    await io.send(STREAM_CLOSE, 0, struct.pack("<I", sid))


async def expect_need(io: IoClient, sid: int, within: float = WAIT) -> tuple[int, int]:
    with trio.fail_after(within):
        need = await io.expect(STREAM_NEED, sid)
    assert need.request_id == 0
    assert len(need.payload) == 20
    start, end = struct.unpack_from("<QQ", need.payload, 4)
    return int(start), int(end)


async def write_piece(
    http: HttpClient, daemon: RunningDaemon, path: str, offset: int, data: bytes, verify: bool
) -> None:
    headers: list[tuple[str | bytes, str | bytes]] = [
        *daemon.auth,
        ("X-Path-Base64", b64(path)),
        ("X-Offset", str(offset)),
    ]
    if verify:
        headers.append(("X-Expected-SHA1", hashlib.sha1(data).hexdigest()))
    reply = await http.request("POST", f"/write/{ROOT_KEY}", headers, data)
    assert reply.status == 200, reply


@attrs.define(eq=False)
class BodyReader:
    """One GET on its own connection, read as it arrives."""

    status: int = 0
    headers: dict[bytes, bytes] = attrs.field(factory=dict)
    body: bytearray = attrs.field(factory=bytearray)
    complete: bool = False  # EndOfMessage seen
    ended: trio.Event = attrs.field(factory=trio.Event)  # complete, or the connection closed
    grew: trio.Event = attrs.field(factory=trio.Event)
    stream: trio.SocketStream | None = None

    async def run(
        self, port: int, path: str, headers: Iterable[tuple[bytes, bytes]] = (), method: str = "GET"
    ) -> None:
        conn = h11.Connection(h11.CLIENT)
        try:
            self.stream = stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                request = h11.Request(
                    method=method,
                    target=path,
                    headers=[(b"host", f"127.0.0.1:{port}".encode()), *headers],
                )
                await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await stream.receive_some(1 << 20)
                        if not data:
                            return
                        conn.receive_data(data)
                    elif isinstance(event, h11.Response):
                        self.status = event.status_code
                        self.headers = {bytes(k): bytes(v) for k, v in event.headers}
                        self._grew()
                    elif isinstance(event, h11.Data):
                        self.body += event.data
                        self._grew()
                    elif isinstance(event, h11.EndOfMessage):
                        self.complete = True
                        return
                    else:
                        return
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, h11.ProtocolError):
            return
        finally:
            self.ended.set()
            self._grew()

    def _grew(self) -> None:
        self.grew.set()
        self.grew = trio.Event()

    async def wait_for(self, size: int, within: float = WAIT) -> None:
        """Until ``size`` body bytes arrived (or the response ended)."""
        with trio.fail_after(within):
            while len(self.body) < size and not self.ended.is_set():
                await self.grew.wait()

    async def wait_ended(self, within: float = WAIT) -> None:
        with trio.fail_after(within):
            await self.ended.wait()

    async def close(self) -> None:
        if self.stream is not None:
            await self.stream.aclose()


async def start_reader(
    nursery: trio.Nursery,
    port: int,
    path: str,
    range_header: str | None = None,
    method: str = "GET",
    origin: str | None = None,
) -> BodyReader:
    reader = BodyReader()
    headers: list[tuple[bytes, bytes]] = []
    if range_header is not None:
        headers.append((b"range", range_header.encode()))
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    nursery.start_soon(reader.run, port, path, headers, method)
    return reader
