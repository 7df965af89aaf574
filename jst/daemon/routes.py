"""The io-daemon's routes (§5.7) and their handlers.

Handlers are thin: they extract inputs with the sans-I/O helpers of http.py (in the
order the original checks them, §5.6), make exactly one thread hop into fileops.py for
filesystem work, and return a ``Response``. ``dispatch`` applies preflight, auth and
routing first (http.py's theory of operation).
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs

from jst.daemon.errors import HttpError, MethodNotAllowed, NotFound, Unauthorized
from jst.daemon.http import (
    FILE_BODY_LIMIT,
    OCTET_STREAM,
    Query,
    Request,
    Response,
    ascii_header,
    header_u64,
    is_authorized,
    json_field,
    json_object_body,
    json_response,
    needs_auth,
    path_from_header,
    percent_decode,
    preflight,
    text,
)
from jst.daemon.state import ConfigLoadError, DaemonState
from jst.daemon.threadhop import run_in_thread

if TYPE_CHECKING:
    from jst.daemon import fastfile, fileops

log = logging.getLogger("jst.daemon")

# Hashing a body this small costs less than a thread hop; larger bodies are hashed in a
# worker thread (hashlib releases the GIL), which keeps the event loop responsive.
INLINE_HASH_LIMIT = 64 * 1024

# The file modules (fastfile, fileops, fsroot: ~10 ms to import) are loaded by the first
# request that is not GET /health, not at start: the first /health answer of a cold start
# is what the extension waits for (issue 17). ``dispatch`` checks one global per request.
_files_loaded = False


def _load_files() -> None:
    global fastfile, fileops, _files_loaded
    from jst.daemon import fastfile, fileops

    _files_loaded = True


@attrs.define
class Context:
    """What a handler may use besides the request: state, the body, process control."""

    state: DaemonState
    read_body: Callable[[int], Awaitable[bytes]]
    request_shutdown: Callable[[], None]


Handler = Callable[[Request, Context, str], Awaitable[Response]]


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    # Not abandoned on cancel: a write that started finishes before its task ends, so a
    # closed connection never leaves a half-done operation running unseen.
    return await run_in_thread(fn, *args)


async def health(_req: Request, _ctx: Context, _param: str) -> Response:
    return text("ok")


async def io_without_upgrade(_req: Request, _ctx: Context, _param: str) -> Response:
    return text("Connection header did not include 'upgrade'", 400)


async def write(req: Request, ctx: Context, root_key: str) -> Response:
    body = await ctx.read_body(FILE_BODY_LIMIT)
    rel = path_from_header(req)
    offset = header_u64(req, b"x-offset", "X-Offset") or 0
    target = ctx.state.target(root_key, rel)
    expected = ascii_header(req, b"x-expected-sha1", "X-Expected-SHA1")
    await fastfile.write_at(target, body, offset, expected)
    if expected is not None and body:
        # Streams (streams.py) are open only once that module is loaded: a /stream or
        # /io session loads it; until then no reader can be waiting for this range.
        streams = sys.modules.get("jst.daemon.streams")
        if streams is not None:
            streams.on_verified_write(ctx.state, target, offset, len(body), expected)
    return Response()


async def read(req: Request, ctx: Context, root_key: str) -> Response:
    rel = path_from_header(req)
    offset = header_u64(req, b"x-offset", "X-Offset") or 0
    length = header_u64(req, b"x-length", "X-Length")
    target = ctx.state.target(root_key, rel)
    data = await fastfile.read_range(target, offset, length)
    return Response(200, data, OCTET_STREAM)


async def _json_target(req: Request, ctx: Context) -> tuple[dict[str, Any], Any]:
    obj = json_object_body(req, await ctx.read_body(FILE_BODY_LIMIT))
    rel = json_field(obj, "path", str)
    root_key = json_field(obj, "root_key", str)
    return obj, ctx.state.target(root_key, rel)


async def ensure_dir(req: Request, ctx: Context, _param: str) -> Response:
    _obj, target = await _json_target(req, ctx)
    await in_thread(fileops.ensure_dir, target)
    return Response()


async def delete(req: Request, ctx: Context, _param: str) -> Response:
    _obj, target = await _json_target(req, ctx)
    await in_thread(fileops.delete, target)
    return Response()


async def truncate(req: Request, ctx: Context, _param: str) -> Response:
    obj, target = await _json_target(req, ctx)
    length = json_field(obj, "length", int)
    await in_thread(fileops.truncate, target, length)
    return Response()


def _query_target(req: Request, ctx: Context, key_param: str = "root_key") -> Any:
    query = Query(req.query)
    rel = query.text("path")
    return ctx.state.target(query.text(key_param), rel)


async def stat(req: Request, ctx: Context, _param: str) -> Response:
    target = _query_target(req, ctx)
    return json_response(await in_thread(fileops.stat, target))


async def list_dir(req: Request, ctx: Context, _param: str) -> Response:
    target = _query_target(req, ctx)
    return json_response(await in_thread(fileops.list_dir, target))


def _body_hasher(algorithm: str) -> Handler:
    async def hash_body(_req: Request, ctx: Context, _param: str) -> Response:
        body = await ctx.read_body(FILE_BODY_LIMIT)
        if len(body) <= INLINE_HASH_LIMIT:
            digest = hashlib.new(algorithm, body).digest()
        else:
            digest = await in_thread(lambda: hashlib.new(algorithm, body).digest())
        return Response(200, digest, OCTET_STREAM)

    return hash_body


def _file_hasher(algorithm: str) -> Handler:
    async def hash_file(req: Request, ctx: Context, path: str) -> Response:
        query = Query(req.query)
        root_key = query.text("root_token")
        offset = query.u64("offset") or 0
        length = query.u64("length")
        target = ctx.state.target(root_key, path)
        return text(await in_thread(fileops.hash_file, target, algorithm, offset, length))

    return hash_file


async def legacy_read(req: Request, ctx: Context, path: str) -> Response:
    query = Query(req.query)
    root_key = query.text("root_key")
    offset = query.u64("offset") or 0
    length = query.u64("length")
    target = ctx.state.target(root_key, path)
    data = await fastfile.read_range(target, offset, length)
    return Response(200, data, OCTET_STREAM)


async def legacy_write(req: Request, ctx: Context, path: str) -> Response:
    body = await ctx.read_body(FILE_BODY_LIMIT)
    query = Query(req.query)
    root_key = query.text("root_key")
    offset = query.u64("offset") or 0
    target = ctx.state.target(root_key, path)
    # The legacy route has no hash check and reports a full disk as a plain 500 (§5.9.4).
    await fastfile.write_at(target, body, offset, None, storage_full=None)
    return Response()


async def stats(_req: Request, ctx: Context, _param: str) -> Response:
    return json_response(ctx.state.stats.snapshot())


async def ping(_req: Request, _ctx: Context, _param: str) -> Response:
    return text("pong")


async def shutdown(_req: Request, ctx: Context, _param: str) -> Response:
    # §9.14: answer 200 first, then exit (the original exits without answering).
    return Response(after_send=ctx.request_shutdown)


async def network_interfaces(_req: Request, _ctx: Context, _param: str) -> Response:
    from jst.daemon.netif import ipv4_interfaces  # psutil: imported on first use only

    return json_response(await in_thread(ipv4_interfaces))


async def reload_rpc_info(_req: Request, ctx: Context, _param: str) -> Response:
    try:
        await in_thread(ctx.state.load_config)
    except ConfigLoadError as exc:
        log.warning("reload of rpc-info.json failed, keeping the old roots: %s", exc)
        raise HttpError(None, status=500) from exc
    return json_response({})


Methods = dict[str, Handler]

# Exact paths. ``/files/ensure_dir`` wins over ``/files/{*path}`` (so GET on it is 405).
EXACT_ROUTES: dict[bytes, Methods] = {
    b"/health": {"GET": health},
    b"/io": {"GET": io_without_upgrade},
    b"/files/ensure_dir": {"POST": ensure_dir},
    b"/ops/stat": {"GET": stat},
    b"/ops/list": {"GET": list_dir},
    b"/ops/delete": {"POST": delete},
    b"/ops/truncate": {"POST": truncate},
    b"/hash/sha1": {"POST": _body_hasher("sha1")},
    b"/hash/sha256": {"POST": _body_hasher("sha256")},
    b"/stats": {"GET": stats},
    b"/control/ping": {"POST": ping},
    b"/control/shutdown": {"POST": shutdown},
    b"/network/interfaces": {"GET": network_interfaces},
    b"/api/read-rpc-info-from-disk": {"POST": reload_rpc_info},
}

# (prefix, methods, wildcard): a one-segment parameter, or ``{*path}`` (may hold '/').
PREFIX_ROUTES: tuple[tuple[bytes, Methods, bool], ...] = (
    (b"/write/", {"POST": write}, False),
    (b"/read/", {"GET": read}, False),
    (b"/hash/sha1/", {"GET": _file_hasher("sha1")}, True),
    (b"/hash/sha256/", {"GET": _file_hasher("sha256")}, True),
    (b"/files/", {"GET": legacy_read, "POST": legacy_write}, True),
)


def route(method: str, raw_path: bytes) -> tuple[Handler, str]:
    """Find the handler: ``NotFound`` for an unknown path, ``MethodNotAllowed`` else."""
    methods = EXACT_ROUTES.get(raw_path)
    param = ""
    if methods is None:
        for prefix, candidate, wildcard in PREFIX_ROUTES:
            if raw_path.startswith(prefix):
                rest = raw_path[len(prefix) :]
                if rest and (wildcard or b"/" not in rest):
                    methods, param = candidate, percent_decode(rest)
                    break
        else:
            raise NotFound()
    # GET routes answer HEAD too (the body is dropped by the transport).
    handler = methods.get("GET" if method == "HEAD" else method)
    if handler is None:
        raise MethodNotAllowed(tuple(methods))
    return handler, param


async def dispatch(req: Request, ctx: Context) -> Response:
    """Preflight, auth, routing, then the handler (see http.py for the order)."""
    if req.method == "OPTIONS":
        return preflight()
    if needs_auth(req) and not is_authorized(req, ctx.state.token):
        raise Unauthorized()
    handler, param = route(req.method, req.raw_path)
    if not _files_loaded and handler is not health:
        _load_files()  # every handler that uses fastfile or fileops is reached from here
    return await handler(req, ctx, param)
