"""The service↔io-daemon request channel (SERVICE.md §3: "these routes ask the service").

Why a second channel next to ``jst/control.py``: that one is the host's config push and
lifeline, and old daemons and hosts speak it as it is. This one only exists between a
service and a daemon it started with ``--service-link``; each side may ask the other.

Transport: a Unix socket in the service's 0700 per-daemon directory; the daemon connects
and its first line is ``{"v":1,"op":"hello","auth":"<daemon token>"}``.
Framing (``jst/jsonlines.py``, as ``jst/control.py``): one JSON object per line, at most
``MAX_LINE`` bytes, ``"v": 1`` in each.

* request:      ``{"v":1,"id":<n>,"op":"<name>",...}`` — answered by exactly one reply
* reply:        ``{"v":1,"re":<n>,"status":<http-like int>,"body":<any>}``
* notification: ``{"v":1,"op":"<name>",...}`` (no ``id``) — never answered

Daemon → service: ``roots`` (fresh list), ``delete_root`` {key}, ``open`` {root_key,
path, reveal}, ``pick``; notification ``clients`` {count} (authenticated /control
clients). Service → daemon: ``event`` {event} → body {"delivered": n}; notification
``roots_changed`` {roots}.

``encode``/``LineDecoder`` are the protocol (pure); ``Peer`` is the thin trio loop.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from jst import jsonlines

log = logging.getLogger("jst.service.channel")

VERSION = 1
MAX_LINE = 4 * 1024 * 1024
REQUEST_TIMEOUT = 10.0


class ChannelError(Exception):
    """The peer broke the protocol, or went away; the channel is finished."""


def encode(message: dict[str, Any]) -> bytes:
    return jsonlines.encode(VERSION, message)


def decode(line: bytes) -> dict[str, Any]:
    return jsonlines.decode(line, VERSION, ChannelError)


class LineDecoder(jsonlines.LineDecoder[dict[str, Any]]):
    def __init__(self, max_line: int = MAX_LINE) -> None:
        super().__init__(decode, ChannelError, max_line)


Reply = tuple[int, Any]
RequestHandler = Callable[[dict[str, Any]], Awaitable[Reply]]
NoticeHandler = Callable[[dict[str, Any]], Awaitable[None]]


class Peer:
    """One end of the channel. ``run`` reads until the stream ends; requests in both
    directions are served concurrently (a folder dialog never blocks an event); notices
    are handled in order, inline, so their handlers must not block."""

    def __init__(
        self, stream: trio.abc.Stream, on_request: RequestHandler, on_notice: NoticeHandler
    ) -> None:
        self.stream = stream
        self._on_request = on_request
        self._on_notice = on_notice
        self._decoder = LineDecoder()
        self._send_lock = trio.Lock()
        self._next_id = 0
        self._waiting: dict[int, tuple[trio.Event, list[Reply]]] = {}
        self.closed = trio.Event()

    async def _send(self, message: dict[str, Any]) -> None:
        async with self._send_lock:
            try:
                await self.stream.send_all(encode(message))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise ChannelError(f"channel closed: {exc}") from exc

    async def notify(self, op: str, **fields: Any) -> None:
        await self._send({"op": op, **fields})

    async def request(self, op: str, within: float = REQUEST_TIMEOUT, **fields: Any) -> Reply:
        """(status, body) of the peer's reply; ``ChannelError`` if none comes."""
        if self.closed.is_set():
            raise ChannelError("channel closed")
        self._next_id += 1
        request_id = self._next_id
        done = trio.Event()
        box: list[Reply] = []
        self._waiting[request_id] = (done, box)
        try:
            await self._send({"id": request_id, "op": op, **fields})
            with trio.move_on_after(within):
                await done.wait()
        finally:
            self._waiting.pop(request_id, None)
        if not box:
            raise ChannelError(f"no reply to {op!r}")
        return box[0]

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    message = self._decoder.next_message()
                    if message is None:
                        try:
                            data = await self.stream.receive_some(65536)
                        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                            data = b""
                        if not data:
                            break
                        self._decoder.receive_data(bytes(data))
                        continue
                    await self._dispatch(message, nursery)
                nursery.cancel_scope.cancel()
        except* ChannelError as group:  # raised in the nursery: trio wraps it in a group
            log.warning("service channel: %s", group.exceptions[0])
        finally:
            self.closed.set()
            for done, _box in self._waiting.values():
                done.set()
            await trio.aclose_forcefully(self.stream)

    async def _dispatch(self, message: dict[str, Any], nursery: trio.Nursery) -> None:
        if "re" in message:
            waiting = self._waiting.get(message["re"]) if isinstance(message["re"], int) else None
            if waiting is not None:
                status = message.get("status")
                waiting[1].append((status if isinstance(status, int) else 500, message.get("body")))
                waiting[0].set()
            return
        if not isinstance(message.get("op"), str):
            raise ChannelError("a message without 'op'")
        request_id = message.get("id")
        if request_id is None:
            await self._notice(message)  # inline: notices keep their order
        elif isinstance(request_id, int):
            nursery.start_soon(self._answer, request_id, message)
        else:
            raise ChannelError("'id' must be an integer")

    async def _notice(self, message: dict[str, Any]) -> None:
        try:
            await self._on_notice(message)
        except Exception:
            log.exception("handling %r", message.get("op"))

    async def _answer(self, request_id: int, message: dict[str, Any]) -> None:
        try:
            status, body = await self._on_request(message)
        except Exception as exc:
            log.exception("handling %r", message.get("op"))
            status, body = 500, f"Internal error: {exc}"
        with contextlib.suppress(ChannelError):
            await self._send({"re": request_id, "status": status, "body": body})
