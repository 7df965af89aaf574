"""The thin ASGI layer between hypercorn and the daemon's protocol modules.

It turns an ASGI ``http`` scope into a ``Request``, runs ``routes.dispatch``, turns any
``HttpError`` into its response (the single boundary where errors become answers),
adds CORS headers, and writes the ``Response``. Nothing here knows about any route.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from jst.daemon.errors import HttpError, MethodNotAllowed, PayloadTooLarge
from jst.daemon.http import TEXT_PLAIN, Request, Response, allow_header, parse_u64
from jst.daemon.routes import Context, dispatch
from jst.daemon.state import DaemonState

log = logging.getLogger("jst.daemon")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

TOO_LARGE = "Failed to buffer the request body: length limit exceeded"


def error_response(exc: HttpError) -> Response:
    if exc.message is None:
        response = Response(exc.status)
    else:
        response = Response(exc.status, exc.message.encode("utf-8"), TEXT_PLAIN)
    if isinstance(exc, MethodNotAllowed):
        response.headers.append(allow_header(exc.allowed))
    return response


def body_reader(req: Request, receive: Receive) -> Callable[[int], Awaitable[bytes]]:
    async def read_body(limit: int) -> bytes:
        declared = req.header(b"content-length")
        if declared is not None:
            size = parse_u64(declared)
            if size is not None and size > limit:
                raise PayloadTooLarge(TOO_LARGE)  # refused before reading a byte
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > limit:
                raise PayloadTooLarge(TOO_LARGE)
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    return read_body


class DaemonApp:
    """The ASGI application hypercorn serves."""

    def __init__(self, state: DaemonState, request_shutdown: Callable[[], None]) -> None:
        self.state = state
        self.request_shutdown = request_shutdown

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            # The /io multiplexer is not built yet: refuse the upgrade (HTTP 403).
            await send({"type": "websocket.close", "code": 1008})
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        req = Request(
            method=scope["method"],
            raw_path=scope.get("raw_path") or scope["path"].encode("utf-8"),
            query=scope.get("query_string", b""),
            headers=tuple(scope["headers"]),
        )
        ctx = Context(self.state, body_reader(req, receive), self.request_shutdown)
        try:
            response = await dispatch(req, ctx)
        except HttpError as exc:
            response = error_response(exc)
        except Exception:
            log.exception("unexpected error in %s %r", req.method, req.raw_path)
            response = Response(500)
        headers = [(b"content-length", str(len(response.body)).encode())]
        if response.content_type is not None:
            headers.append((b"content-type", response.content_type))
        headers.extend(response.headers)
        headers.extend(self.state.cors.response_headers(req, self.state.extension_id))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        body = b"" if req.method == "HEAD" else response.body
        await send({"type": "http.response.body", "body": body})
        if response.after_send is not None:
            response.after_send()
