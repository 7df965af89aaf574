"""The host's HTTP endpoint for link-handlers (§4.3): /health, /add-magnet, /add-torrent.

Plain HTTP/1.1 on ``127.0.0.1:<ephemeral>``; the port and token are published in this
host's ``rpc-info.json`` profile, which is how link-handlers (ours and the original's)
find us. A request is authorised by the ``token`` query parameter.

``handle`` is the protocol, sans-I/O: a parsed request in, a status, a body and maybe
an event out. Its checks run in the original's order — query (400), JSON body
(415/400/422/413), token (403), torrent size (413) — because clients of the original
see those statuses. ``serve`` is the thin trio loop around it: one request per
connection (link-handlers send one), answered with ``Connection: close``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

import attrs
import h11
import trio

from jst.host import messages, nm

log = logging.getLogger("jst.host.linkrpc")

MAX_BODY = 2 * 1024 * 1024  # the original's default body limit
MAX_TORRENT_BASE64 = 900_000  # keeps a TorrentAdded frame under Chrome's 1 MiB (§4.3)
# A link-handler sends its request at once; a connection idle this long is abandoned.
REQUEST_TIMEOUT = 10.0
JSON_TYPE = b"application/json"


@attrs.frozen
class Reply:
    status: int
    body: bytes = b""
    content_type: bytes | None = None
    event: dict[str, Any] | None = None


def _json_reply(value: Any) -> Reply:
    return Reply(200, json.dumps(value, separators=(",", ":")).encode(), JSON_TYPE)


def _text(status: int, message: str) -> Reply:
    return Reply(status, message.encode(), b"text/plain; charset=utf-8")


def _is_json(content_type: bytes | None) -> bool:
    if content_type is None:
        return False
    mime = content_type.split(b";", 1)[0].strip().lower()
    return mime == JSON_TYPE or (mime.startswith(b"application/") and mime.endswith(b"+json"))


def _json_body(
    content_type: bytes | None, body: bytes, fields: tuple[str, ...]
) -> dict[str, str] | Reply:
    if not _is_json(content_type):
        return _text(415, "Expected request with `Content-Type: application/json`")
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return _text(400, f"Failed to parse the request body as JSON: {exc}")
    if not isinstance(obj, dict):
        return _text(422, "Failed to deserialize the JSON body: expected an object")
    out: dict[str, str] = {}
    for name in fields:
        value = obj.get(name)
        if not isinstance(value, str):
            return _text(422, f"Failed to deserialize the JSON body: missing string field `{name}`")
        out[name] = value
    return out


def _queued(message: str, event: dict[str, Any]) -> Reply:
    if len(nm.encode_json(event)) > nm.MAX_OUTBOUND:
        return Reply(413)  # Chrome would drop the port rather than take this frame
    return attrs.evolve(_json_reply({"status": "queued", "message": message}), event=event)


def handle(
    method: str, target: bytes, content_type: bytes | None, body: bytes, token: str, pid: int,
    version: str,
) -> Reply:  # fmt: skip
    path, _, query_text = target.partition(b"?")
    routes = {b"/health": "GET", b"/add-magnet": "POST", b"/add-torrent": "POST"}
    if path not in routes:
        return Reply(404)
    if method != routes[path]:
        return Reply(405)
    query = parse_qs(query_text.decode("utf-8", "replace"), keep_blank_values=True)
    if "token" not in query:
        return _text(400, "Failed to deserialize query string: missing field `token`")
    token_ok = query["token"][0] == token
    if path == b"/health":
        if not token_ok:
            return Reply(403)
        return _json_reply({"status": "ok", "pid": pid, "version": version})
    if path == b"/add-magnet":
        fields = _json_body(content_type, body, ("magnet",))
        if isinstance(fields, Reply):
            return fields
        if not token_ok:
            return Reply(403)
        return _queued("Magnet link queued", messages.magnet_added(fields["magnet"]))
    fields = _json_body(content_type, body, ("file_name", "contents_base64"))
    if isinstance(fields, Reply):
        return fields
    if not token_ok:
        return Reply(403)
    if len(fields["contents_base64"]) > MAX_TORRENT_BASE64:
        return Reply(413)
    event = messages.torrent_added(fields["file_name"], fields["contents_base64"])
    return _queued("Torrent file queued", event)


async def _read_request(
    conn: h11.Connection, stream: trio.SocketStream
) -> tuple[h11.Request, bytes] | Reply | None:
    request: h11.Request | None = None
    body = bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            return _text(exc.error_status_hint, "Bad request")
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            conn.receive_data(data)
            if not data and request is None:
                return None
            continue
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                return Reply(413)
        elif isinstance(event, h11.EndOfMessage) and request is not None:
            return request, bytes(body)
        else:
            return None


async def _serve_connection(
    stream: trio.SocketStream,
    token: str,
    version: str,
    deliver: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
    async with stream:
        try:
            with trio.move_on_after(REQUEST_TIMEOUT):
                got = await _read_request(conn, stream)
            if got is None:
                return
            if isinstance(got, Reply):
                reply = got
            else:
                request, body = got
                content_type = dict(request.headers).get(b"content-type")
                reply = handle(
                    request.method.decode("ascii", "replace"), request.target, content_type, body,
                    token, os.getpid(), version,
                )  # fmt: skip
            if reply.event is not None:
                await deliver(reply.event)  # waits while the event queue is full
            headers = [
                (b"content-length", str(len(reply.body)).encode()),
                (b"connection", b"close"),
            ]
            if reply.content_type is not None:
                headers.append((b"content-type", reply.content_type))
            if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
                return
            # h11 lets a server answer from IDLE too: a garbled request still gets its 400.
            reason = HTTPStatus(reply.status).phrase.encode()
            data = conn.send(h11.Response(status_code=reply.status, headers=headers, reason=reason))
            data += conn.send(h11.Data(data=reply.body)) + conn.send(h11.EndOfMessage())
            await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass


async def serve(
    listeners: list[trio.SocketListener],
    token: str,
    version: str,
    deliver: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        try:
            await _serve_connection(stream, token, version, deliver)
        except Exception:
            log.exception("unexpected error serving a link-handler request")

    await trio.serve_listeners(handler, listeners)
