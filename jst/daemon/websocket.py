"""A server-side WebSocket over a trio stream (RFC 6455 frames, ``wsframes`` parses them).

The handshake is the HTTP server's job (``server.py`` answers the upgrade through h11);
this class starts right after the ``101``. It exists, instead of trio-websocket's
connection class, for what the ``/io`` protocol makes decisive: ``send_many`` writes any
number of messages with a single ``send_all`` (a system call per frame was a fifth of
the daemon's CPU with 200 echoing sockets), and the frames are parsed by the small
sans-I/O ``wsframes`` module, which costs a few microseconds per binary frame.

Protocol constraints honoured here (§6.1): we never send pings and never fragment;
client pings are answered; messages up to ``max_message`` bytes are accepted, a larger
one closes the connection with 1009 as soon as its frame header announces it. The limit
can change during the connection: ``/io`` accepts only small messages before AUTH.
"""

from __future__ import annotations

import socket
from collections import deque
from collections.abc import Callable

import trio

from jst.daemon import wsframes

# What a trio stream raises when the peer, or our own close, has ended it.
STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
# One receive takes in many client frames at once (the engine sends bursts of small ones).
RECEIVE_SIZE = 256 * 1024
CLOSE_MESSAGE_TOO_BIG = wsframes.CLOSE_MESSAGE_TOO_BIG
# Batches whose messages average at least this size are written without joining them.
VECTOR_MIN = 16 * 1024
_HAVE_SENDMSG = hasattr(socket.socket, "sendmsg")  # not on Windows
# Buffers per sendmsg call (IOV_MAX is 1024 on Linux, the BSDs and macOS).
IOV_LIMIT = 512
# How long a closing side waits for the peer's Close frame before dropping the TCP link.
CLOSE_WAIT_SECONDS = 1.0


class WebSocket:
    def __init__(
        self,
        stream: trio.abc.Stream,
        trailing_data: bytes,
        max_message: int,
    ) -> None:
        self._stream = stream
        self._parser = wsframes.FrameParser(max_message)
        self._received: deque[bytes | str] = deque()
        self._trailing = trailing_data
        self._closed = False
        self._close_sent = False
        self._send_lock = trio.Lock()
        # Reads go into one reused buffer (the parser copies only what it keeps): a fresh
        # 256 KiB object per read cost page faults (mmap) that were a tenth of upload CPU.
        self._socket = stream.socket if isinstance(stream, trio.SocketStream) else None
        # The stdlib socket under it, for ``send_now`` (a synchronous, non-blocking send).
        self._raw_socket: socket.socket | None = (
            getattr(self._socket, "_sock", None) if self._socket is not None else None
        )
        self._buffer = bytearray(RECEIVE_SIZE) if self._socket is not None else None
        # Called once by mux.authenticate when AUTH succeeds (the server stops treating
        # the connection as an anonymous waiting one).
        self.on_authenticated: Callable[[], None] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def max_message(self) -> int:
        return self._parser.max_message

    @max_message.setter
    def max_message(self, size: int) -> None:
        self._parser.max_message = size

    @property
    def has_buffered_messages(self) -> bool:
        """True when ``receive`` will return without reading from the network."""
        return bool(self._received)

    async def receive(self) -> bytes | str | None:
        """The next whole message, or ``None`` once the connection is closed."""
        while not self._received:
            if self._closed:
                return None
            await self._pump()
        return self._received.popleft()

    async def _pump(self) -> None:
        """Read once from the stream and turn what came into messages and replies."""
        data: bytes | bytearray | memoryview
        if self._trailing:
            data, self._trailing = self._trailing, b""
        elif self._socket is not None and self._buffer is not None:
            try:
                size = await self._socket.recv_into(self._buffer)
            except STREAM_ERRORS:
                size = 0
            data = memoryview(self._buffer)[:size]
        else:
            try:
                data = await self._stream.receive_some(RECEIVE_SIZE)
            except STREAM_ERRORS:
                data = b""
        if not data:
            self._closed = True
            await trio.aclose_forcefully(self._stream)
            return
        replies: list[bytes] = []
        for event in self._parser.receive(data):
            if isinstance(event, (bytes, str)):
                self._received.append(event)
            elif isinstance(event, wsframes.Ping):
                replies.append(wsframes.encode_pong(event.payload))
            elif isinstance(event, wsframes.Close):
                if not self._close_sent:  # echo the peer's code (RFC 6455 §5.5.1)
                    self._close_sent = True
                    replies.append(wsframes.encode_close(event.code))
                self._closed = True
            else:  # Fail: tell the peer why, then drop the connection
                if not self._close_sent:
                    self._close_sent = True
                    replies.append(wsframes.encode_close(event.code))
                self._closed = True
        if replies:
            await self._send_raw(b"".join(replies))
        if self._closed:
            await trio.aclose_forcefully(self._stream)

    async def send_many(self, messages: list[bytes]) -> None:
        """Send binary messages, one frame each, in one write. Silently nothing once closed.

        Small batches are joined into one buffer; large ones go out as a vector of
        buffers (``sendmsg``), so 128 KiB TCP_RECV frames are not copied once more.
        """
        if self._closed or self._close_sent:
            return
        pieces = wsframes.encode_binary(messages)
        total = sum(map(len, messages))
        if (
            self._socket is None
            or not _HAVE_SENDMSG
            or len(pieces) <= 2
            or total < VECTOR_MIN * len(messages)
        ):
            await self._send_raw(b"".join(pieces))  # small frames: one copy is cheaper
            return
        async with self._send_lock:
            try:
                await send_vector(self._socket, pieces)
            except STREAM_ERRORS:
                self._closed = True

    def send_now(self, messages: list[bytes]) -> bytes | None:
        """Write binary messages now, without waiting, if no send is in flight; returns
        the framed bytes the socket did not take (the caller sends them next, in order
        with ``send_framed``), or None when all were written or the connection is gone."""
        if self._closed or self._close_sent:
            return None
        data = b"".join(wsframes.encode_binary(messages))
        raw = self._raw_socket
        if raw is None or self._send_lock.locked():
            return data
        try:
            sent = raw.send(data)
        except BlockingIOError:
            return data
        except OSError:
            self._closed = True
            return None
        return data[sent:] if sent < len(data) else None

    async def send_framed(self, data: bytes) -> None:
        """Bytes ``send_now`` could not write, as they are."""
        if not self._closed:
            await self._send_raw(data)

    async def close(self, code: int) -> None:
        """Send a Close frame, give the peer a moment to answer, drop the connection.

        Only for the task that also reads (a second concurrent reader is an error).
        """
        if not self._closed and not self._close_sent:
            self._close_sent = True
            await self._send_raw(wsframes.encode_close(code))
            with trio.move_on_after(CLOSE_WAIT_SECONDS):
                while not self._closed:
                    await self._pump()
        self._closed = True
        await trio.aclose_forcefully(self._stream)

    async def close_soon(self, code: int) -> None:
        """Send a Close frame only; the task reading this WebSocket sees the answer."""
        if not self._closed and not self._close_sent:
            self._close_sent = True
            await self._send_raw(wsframes.encode_close(code))

    async def _send_raw(self, data: bytes) -> None:
        async with self._send_lock:
            try:
                await self._stream.send_all(data)
            except STREAM_ERRORS:
                self._closed = True


async def send_vector(sock: trio.socket.SocketType, pieces: list[bytes]) -> None:
    """Write every piece, in order, with as few ``sendmsg`` calls as the kernel allows."""
    buffers: list[bytes | memoryview] = [piece for piece in pieces if piece]
    start = 0
    while start < len(buffers):
        sent = await sock.sendmsg(buffers[start : start + IOV_LIMIT])
        while sent:
            size = len(buffers[start])
            if sent >= size:
                sent -= size
                start += 1
            else:
                buffers[start] = memoryview(buffers[start])[sent:]
                sent = 0
