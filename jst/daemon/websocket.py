"""A server-side WebSocket over a trio stream, driven by wsproto (RFC 6455 frames only).

The handshake is the HTTP server's job (``server.py`` answers the upgrade through h11);
this class starts right after the ``101``. It exists, instead of trio-websocket's
connection class, for one reason the ``/io`` protocol makes decisive: ``send_many``
writes any number of messages with a single ``send_all``. The multiplexer produces many
small frames at once (200 echo replies, say) and a system call per frame was a fifth of
the daemon's CPU in that case.

Protocol constraints honoured here (§6.1): we never send pings and never fragment
(wsproto sends every message as one frame); client pings are answered; messages up to
``max_message`` bytes are accepted, a larger one closes the connection with 1009.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, TextMessage
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

# What a trio stream raises when the peer, or our own close, has ended it.
STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
# One receive takes in many client frames at once (the engine sends bursts of small ones).
RECEIVE_SIZE = 256 * 1024
CLOSE_MESSAGE_TOO_BIG = 1009
# How long a closing side waits for the peer's Close frame before dropping the TCP link.
CLOSE_WAIT_SECONDS = 1.0


class WebSocket:
    def __init__(self, stream: trio.abc.Stream, trailing_data: bytes, max_message: int) -> None:
        self._stream = stream
        self._ws = Connection(ConnectionType.SERVER, trailing_data=trailing_data)
        self._max_message = max_message
        self._received: deque[bytes | bytearray | str] = deque()
        self._partial: list[bytes | bytearray | str] = []
        self._partial_size = 0
        self._closed = False
        self._send_lock = trio.Lock()

    @property
    def closed(self) -> bool:
        return self._closed

    async def receive(self) -> bytes | bytearray | str | None:
        """The next whole message, or ``None`` once the connection is closed."""
        while not self._received:
            if self._closed:
                return None
            await self._pump()
        return self._received.popleft()

    async def _pump(self) -> None:
        """Read once from the stream and turn what came into messages and replies."""
        try:
            data = await self._stream.receive_some(RECEIVE_SIZE)
        except STREAM_ERRORS:
            data = b""
        try:
            self._ws.receive_data(bytes(data) if data else None)
            replies = []
            for event in self._ws.events():
                if isinstance(event, Message):
                    self._add_fragment(event)
                elif isinstance(event, Ping):
                    replies.append(self._ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    if self._ws.state is ConnectionState.REMOTE_CLOSING:
                        replies.append(self._ws.send(event.response()))
                    self._closed = True
        except _TooBig:
            await self.close(CLOSE_MESSAGE_TOO_BIG)
            return
        except (RemoteProtocolError, LocalProtocolError):
            # A broken frame: wsproto has queued its Close frame; send it and stop.
            self._closed = True
            replies = []
        if replies:
            await self._send_raw(b"".join(replies))
        if not data or self._closed:
            self._closed = True
            await trio.aclose_forcefully(self._stream)

    def _add_fragment(self, event: Message[Any]) -> None:
        self._partial.append(event.data)
        self._partial_size += len(event.data)
        if self._partial_size > self._max_message:
            raise _TooBig
        if event.message_finished:
            parts = self._partial
            if isinstance(event, TextMessage):
                self._received.append("".join(part for part in parts if isinstance(part, str)))
            elif len(parts) == 1:
                self._received.append(parts[0])  # wsproto's bytearray, not copied again
            else:
                self._received.append(b"".join(part for part in parts if isinstance(part, bytes)))
            self._partial = []
            self._partial_size = 0

    async def send_many(self, messages: list[bytes]) -> None:
        """Send binary messages, one frame each, in one write. Silently nothing once closed."""
        if self._closed or self._ws.state is not ConnectionState.OPEN:
            return
        ws = self._ws
        if len(messages) == 1:
            data = ws.send(BytesMessage(data=messages[0]))
        else:
            data = b"".join([ws.send(BytesMessage(data=message)) for message in messages])
        await self._send_raw(data)

    async def close(self, code: int) -> None:
        """Send a Close frame, give the peer a moment to answer, drop the connection.

        Only for the task that also reads (a second concurrent reader is an error).
        """
        if not self._closed and self._ws.state is ConnectionState.OPEN:
            await self._send_raw(self._ws.send(CloseConnection(code=code)))
            with trio.move_on_after(CLOSE_WAIT_SECONDS):
                while not self._closed:
                    await self._pump()
        self._closed = True
        await trio.aclose_forcefully(self._stream)

    async def close_soon(self, code: int) -> None:
        """Send a Close frame only; the task reading this WebSocket sees the answer."""
        if not self._closed and self._ws.state is ConnectionState.OPEN:
            await self._send_raw(self._ws.send(CloseConnection(code=code)))

    async def _send_raw(self, data: bytes) -> None:
        async with self._send_lock:
            try:
                await self._stream.send_all(data)
            except STREAM_ERRORS:
                self._closed = True


class _TooBig(Exception):
    pass
