"""The control channel over a trio stream: the thin I/O layer around ``control.py``.

Addresses are text so they fit on a command line: ``unix:<path>`` on Unix,
``tcp:127.0.0.1:<port>`` on Windows (see ``host/control_server.py`` for why).
"""

from __future__ import annotations

import trio

from jst import control

RECEIVE_SIZE = 64 * 1024


class ControlStream:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._decoder = control.LineDecoder()
        self._send_lock = trio.Lock()

    def adopt_decoder(self, decoder: control.LineDecoder) -> None:
        """Continue from bytes already read off this connection by a blocking reader."""
        self._decoder = decoder

    async def send(self, message: control.Message) -> None:
        async with self._send_lock:
            await self.stream.send_all(control.encode(message))

    async def receive(self) -> control.Message | None:
        """The next message; ``None`` at end of stream. ``ControlError`` on bad input."""
        while True:
            message = self._decoder.next_message()
            if message is not None:
                return message
            data = await self.stream.receive_some(RECEIVE_SIZE)
            if not data:
                return None
            self._decoder.receive_data(bytes(data))

    async def aclose(self) -> None:
        await self.stream.aclose()


async def connect(address: str) -> ControlStream:
    kind, _, rest = address.partition(":")
    if kind == "unix":
        return ControlStream(await trio.open_unix_socket(rest))
    if kind == "tcp":
        host, _, port = rest.rpartition(":")
        if host not in ("127.0.0.1", "::1"):
            raise ValueError(f"control address must be loopback, got {host!r}")
        return ControlStream(await trio.open_tcp_stream(host, int(port)))
    raise ValueError(f"unknown control address {address!r} (expected unix:… or tcp:…)")
