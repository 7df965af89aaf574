"""A small HTTP/1.1 client for tests: h11 over a trio TCP stream, keep-alive included.

Header names and values are sent as given (bytes allowed), so tests can send exactly the
malformed input they mean to send.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import attrs
import h11
import trio

HeaderInput = Sequence[tuple[str | bytes, str | bytes]]


@attrs.frozen
class Reply:
    status: int
    reason: bytes
    headers: dict[bytes, bytes]  # lower-case names; last value wins
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        value = self.headers.get(name.lower().encode())
        return None if value is None else value.decode("latin-1")


class HttpClient:
    """One keep-alive connection to 127.0.0.1:port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._stream: trio.SocketStream | None = None
        self._conn = h11.Connection(h11.CLIENT)

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()
            self._stream = None

    async def request(
        self,
        method: str,
        target: str,
        headers: HeaderInput | None = None,
        body: bytes = b"",
    ) -> Reply:
        if self._stream is None or self._conn.our_state is not h11.IDLE:
            await self.aclose()
            self._conn = h11.Connection(h11.CLIENT)
            self._stream = await trio.open_tcp_stream("127.0.0.1", self.port)
        stream = self._stream
        assert stream is not None
        all_headers: list[tuple[bytes, bytes]] = [(b"Host", f"127.0.0.1:{self.port}".encode())]
        all_headers += [(_bytes(k), _bytes(v)) for k, v in headers or []]
        if body or method in ("POST", "PUT"):
            all_headers.append((b"Content-Length", str(len(body)).encode()))
        await stream.send_all(
            self._conn.send(h11.Request(method=method, target=target, headers=all_headers))
        )
        if body:
            await stream.send_all(self._conn.send(h11.Data(data=body)))
        await stream.send_all(self._conn.send(h11.EndOfMessage()))
        response: h11.Response | None = None
        chunks: list[bytes] = []
        while True:
            event = self._conn.next_event()
            if event is h11.NEED_DATA:
                self._conn.receive_data(await stream.receive_some(1 << 20))
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
        assert response is not None
        if self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE:
            self._conn.start_next_cycle()
        else:
            await self.aclose()
        return Reply(
            status=response.status_code,
            reason=response.reason,
            headers={k.lower(): v for k, v in response.headers},
            body=b"".join(chunks),
        )


def _bytes(value: str | bytes) -> bytes:
    return value.encode("latin-1") if isinstance(value, str) else value


async def raw_exchange(port: int, data: bytes, quiet_after: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes or goes quiet; for malformed input."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    received = b""
    async with stream:
        await stream.send_all(data)
        with trio.move_on_after(quiet_after):
            while True:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                received += chunk
                if b"\r\n\r\n" in received:
                    head, _, rest = received.partition(b"\r\n\r\n")
                    for line in head.split(b"\r\n"):
                        name, _, value = line.partition(b":")
                        if name.lower() == b"content-length" and len(rest) >= int(value):
                            return received
    return received
