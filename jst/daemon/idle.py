"""``--idle-exit SECONDS``: end the daemon when no client has used it for that long.

Idle means no HTTP connection open at all, so no request in flight and no WebSocket
session (``/io`` or ``/control``); a keep-alive connection waiting for its next request
counts as a client, which errs on the side of staying. The server's connection set is
replaced by one that notes when it last changed, so even a connection that came and
went between two checks resets the clock. Exit status 0, and the reason reaches the
supervisor as a deliberate stop (not restarted; the next endpoint request starts a new
daemon).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import trio

log = logging.getLogger("jst.daemon")


class ActivitySet(set[Any]):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.last_change = time.monotonic()

    def add(self, item: Any) -> None:
        self.last_change = time.monotonic()
        super().add(item)

    def discard(self, item: Any) -> None:
        self.last_change = time.monotonic()
        super().discard(item)


async def watch_idle(server: Any, seconds: float, request_exit: Callable[[int, str], None]) -> None:
    """Call ``request_exit(0, why)`` once ``server`` has had no connection for ``seconds``."""
    connections = ActivitySet(server.connections)
    server.connections = connections
    tick = max(0.05, min(1.0, seconds / 4))
    while True:
        await trio.sleep(tick)
        now = time.monotonic()
        if connections:
            connections.last_change = now
        elif now - connections.last_change >= seconds:
            log.info("no client for %g s", seconds)
            request_exit(0, f"idle for {seconds:g} s (--idle-exit)")
            return
