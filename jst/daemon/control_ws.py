"""Service mode of the io-daemon: ``/control``, ``GET /roots``, ``DELETE /roots/{key}``,
``POST /open`` (SERVICE.md §3), and the daemon's end of the service channel.

Only a daemon started by ``jst service`` (``--service-link``) serves these; ``enable``
registers them at startup, so a daemon of the default mode answers them 404 as before.
The daemon never writes configuration: every route asks the service over the channel
(``jst/service/channel.py``), which writes ``rpc-info.json`` and pushes the new roots.

``/control`` is the ``/io`` envelope and handshake (PROTOCOL.md §6.2, §6.4, same token)
with the opcodes of the original's Android companion server:

* ``0xE0 CTRL_ROOTS_CHANGED`` D→C, JSON ``[{"key","uri","displayName","available"}]``:
  right after AUTH_RESULT, then whenever the list or an ``available`` flag changes (each
  client is sent a list only if it differs from the last one it got);
* ``0xE1 CTRL_EVENT`` D→C, JSON ``{"event","payload"}``: link-handler events, handed to
  us by the service; each goes to every authenticated client once;
* ``0xE2 CTRL_OPEN_FOLDER_PICKER`` C→D: the service shows the folder dialog; a chosen
  folder arrives as ``CTRL_ROOTS_CHANGED``.

Anything else after AUTH gets ``ERROR "Unknown opcode"`` (a wrong version ``ERROR
"Invalid protocol version"``, a message over ``MAX_MESSAGE`` ``ERROR "Message too
large"``) and the session stays as it was. Each client has its own bounded queue and
writer task: a client that does not read is dropped, never waited for (SERVICE.md §5).

Nursery tree (inside the daemon's, see main.py)::

    service_link ............. connect, hello, Peer.run (requests/notices from the service)
    <HTTP connection task> ... per /control session: serve_session
        └── session nursery .. write_loop (the only sender) + the read loop (body)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from typing import Any

import attrs
import trio

from jst.daemon import mux, routes, wire
from jst.daemon.errors import HttpError, NotFound
from jst.daemon.http import Request, Response, json_response, text
from jst.daemon.routes import Context
from jst.daemon.state import DaemonState
from jst.daemon.websocket import WebSocket
from jst.service.channel import ChannelError, Peer, Reply

log = logging.getLogger("jst.daemon.control")

CTRL_ROOTS_CHANGED = 0xE0
CTRL_EVENT = 0xE1
CTRL_OPEN_FOLDER_PICKER = 0xE2
MAX_MESSAGE = 64 * 1024  # the only C→D message is an empty picker request
MAX_BODY = 64 * 1024
CLIENT_QUEUE = 64  # frames a client may have unsent before it is dropped
CONNECT_TIMEOUT = 5.0
SERVICE_TIMEOUT = 10.0
TOO_LARGE = "Message too large"
UNAVAILABLE = "The jst service is not reachable"

LINK: ServiceLink | None = None  # set once by ``enable``; one daemon, one service


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


@attrs.define(eq=False)
class ControlClient:
    out: trio.MemorySendChannel[bytes]
    scope: trio.CancelScope
    last_roots: list[Any] | None = None

    def offer(self, frame: bytes) -> bool:
        """Queue a frame; a client whose queue is full is dropped (it cannot keep up)."""
        try:
            self.out.send_nowait(frame)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            self.scope.cancel()
            return False
        return True

    def send_roots(self, roots: list[Any]) -> None:
        if roots != self.last_roots:
            self.last_roots = roots
            self.offer(wire.encode(CTRL_ROOTS_CHANGED, 0, _json(roots)))


@attrs.define(eq=False)
class ServiceLink:
    address: str
    token: str
    peer: Peer | None = None
    roots: list[Any] = attrs.field(factory=list)  # the last list the service pushed
    clients: set[ControlClient] = attrs.field(factory=set)
    # Set once the channel is up, or has failed or closed: a request that arrives while
    # the daemon is still connecting (its first moments) waits for it instead of a 503.
    settled: trio.Event = attrs.field(factory=trio.Event)

    async def run(self) -> None:
        """Connect, say hello, serve the channel until it closes."""
        try:
            kind, _, path = self.address.partition(":")
            if kind != "unix":
                raise ValueError(f"service link must be unix:PATH, got {self.address!r}")
            with trio.fail_after(CONNECT_TIMEOUT):
                stream = await trio.open_unix_socket(path)
            peer = Peer(stream, self._on_request, self._on_notice)
            await peer.notify("hello", auth=self.token, pid=os.getpid())
            self.peer = peer
            self.settled.set()
            try:
                await peer.run()
            finally:
                self.peer = None
                log.warning("service channel closed; /control and /roots are unavailable")
        finally:
            self.settled.set()

    async def ask(self, op: str, **fields: Any) -> Reply:
        if not self.settled.is_set():
            with trio.move_on_after(CONNECT_TIMEOUT):
                await self.settled.wait()
        peer = self.peer
        if peer is None:
            return 503, UNAVAILABLE
        try:
            return await peer.request(op, within=SERVICE_TIMEOUT, **fields)
        except ChannelError:
            return 503, UNAVAILABLE

    async def fresh_roots(self) -> list[Any] | None:
        status, body = await self.ask("roots")
        if status == 200 and isinstance(body, list):
            self.roots = body
            return body
        return None

    async def _tell_clients(self) -> None:
        if self.peer is not None:
            with contextlib.suppress(ChannelError):
                await self.peer.notify("clients", count=len(self.clients))

    async def add(self, client: ControlClient) -> None:
        self.clients.add(client)
        await self._tell_clients()

    async def remove(self, client: ControlClient) -> None:
        self.clients.discard(client)
        await self._tell_clients()

    async def _on_notice(self, message: dict[str, Any]) -> None:
        await trio.lowlevel.checkpoint()
        if message.get("op") == "roots_changed" and isinstance(message.get("roots"), list):
            self.roots = message["roots"]
            for client in list(self.clients):
                client.send_roots(self.roots)

    async def _on_request(self, message: dict[str, Any]) -> Reply:
        await trio.lowlevel.checkpoint()
        event = message.get("event")
        if message.get("op") != "event" or not isinstance(event, dict):
            return 400, "unknown request"
        frame = wire.encode(CTRL_EVENT, 0, _json(event))
        delivered = sum(client.offer(frame) for client in list(self.clients))
        return 200, {"delivered": delivered}


# -- /control --------------------------------------------------------------------------


def is_control_upgrade(req: Request) -> bool:
    upgrade = req.header(b"upgrade")
    return (
        LINK is not None
        and req.method == "GET"
        and req.raw_path == b"/control"
        and upgrade is not None
        and upgrade.lower() == b"websocket"
    )


async def _write_loop(
    ws: WebSocket, frames: trio.MemoryReceiveChannel[bytes], scope: trio.CancelScope
) -> None:
    async for frame in frames:
        batch = [frame]
        while len(batch) < CLIENT_QUEUE:
            try:
                batch.append(frames.receive_nowait())
            except trio.WouldBlock:
                break
        await ws.send_many(batch)
        if ws.closed:
            scope.cancel()
            return


async def serve_session(ws: WebSocket, state: DaemonState) -> None:
    """One ``/control`` WebSocket from the ``101`` to its close."""
    link = LINK
    if link is None:
        return
    if not await mux.authenticate_within_bounds(ws, state.token):  # the bounds of /io
        return
    send, receive = trio.open_memory_channel[bytes](CLIENT_QUEUE)
    async with trio.open_nursery() as nursery:
        client = ControlClient(send, nursery.cancel_scope)
        nursery.start_soon(_write_loop, ws, receive, nursery.cancel_scope)
        roots = await link.fresh_roots()
        client.send_roots(link.roots if roots is None else roots)  # first, before any event
        await link.add(client)
        try:
            await _read_loop(ws, client, link, nursery)
        finally:
            with trio.CancelScope(shield=True):
                await link.remove(client)
            nursery.cancel_scope.cancel()


async def _read_loop(
    ws: WebSocket, client: ControlClient, link: ServiceLink, nursery: trio.Nursery
) -> None:
    while True:
        data = await ws.receive()
        if data is None:
            return
        if isinstance(data, str):
            continue
        if len(data) > MAX_MESSAGE:
            client.offer(wire.encode_error(0, TOO_LARGE))
            continue
        frame = wire.parse_frame(data)
        if frame is None:
            continue
        if frame.version != wire.VERSION:
            client.offer(wire.encode_error(frame.request_id, wire.INVALID_VERSION))
        elif frame.opcode == CTRL_OPEN_FOLDER_PICKER:
            nursery.start_soon(_pick, link)
        else:
            client.offer(wire.encode_error(frame.request_id, wire.UNKNOWN_OPCODE))


async def _pick(link: ServiceLink) -> None:
    status, body = await link.ask("pick")
    if status >= 300:
        log.info("folder picker: %s %s", status, body)


# -- HTTP routes --------------------------------------------------------------------------


def _link() -> ServiceLink:
    if LINK is None:
        raise NotFound()
    return LINK


def _answer(status: int, body: Any) -> Response:
    if status == 200:
        return json_response({} if body is None else body)
    return text(body if isinstance(body, str) else f"Error {status}", status)


async def get_roots(_req: Request, _ctx: Context, _param: str) -> Response:
    status, body = await _link().ask("roots")
    if status == 200 and isinstance(body, list):
        return json_response({"roots": body})
    return _answer(status, body)


async def delete_root(_req: Request, _ctx: Context, key: str) -> Response:
    return _answer(*await _link().ask("delete_root", key=key))


async def open_path(_req: Request, ctx: Context, _param: str) -> Response:
    link = _link()
    body = await ctx.read_body(MAX_BODY)
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise HttpError(f"Malformed JSON body: {exc}", status=400) from exc
    if (
        not isinstance(obj, dict)
        or not isinstance(obj.get("root_key"), str)
        or not isinstance(obj.get("path"), str)
        or not isinstance(obj.get("reveal", False), bool)
    ):
        raise HttpError("Expected {root_key: string, path: string, reveal: bool}", status=400)
    return _answer(
        *await link.ask(
            "open", root_key=obj["root_key"], path=obj["path"], reveal=obj.get("reveal", False)
        )
    )


def enable(address: str, token: str) -> ServiceLink:
    """Service mode on: the routes above join the route table (SERVICE.md §3)."""
    global LINK
    LINK = ServiceLink(address, token)
    routes.EXACT_ROUTES[b"/roots"] = {"GET": get_roots}
    routes.EXACT_ROUTES[b"/open"] = {"POST": open_path}
    routes.PREFIX_ROUTES = ((b"/roots/", {"DELETE": delete_root}, False), *routes.PREFIX_ROUTES)
    return LINK
