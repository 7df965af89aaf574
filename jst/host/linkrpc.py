"""The host's HTTP endpoint for link-handlers (§4.3): /health, /add-magnet, /add-torrent.

Plain HTTP/1.1 on ``127.0.0.1:<ephemeral>``; the port and token are published in this
host's ``rpc-info.json`` profile, which is how link-handlers (ours and the original's)
find us. A request is authorised by the ``token`` query parameter. jst's own
link-handlers use the same HTTP on a Unix socket in the host's private 0700 directory.

``check_head`` and ``handle_body`` are the protocol, sans-I/O: a parsed request head
(then its body) in, a status, a body and maybe an event out. ``serve`` is the thin trio
loop around them: one request per connection (link-handlers send one), answered with
``Connection: close``.

Design notes (what anyone who can connect, without the token, can and cannot do)
-------------------------------------------------------------------------------
* **Order of checks.** The original checks query (400) → JSON body (415/400/422/413) →
  token (403). We keep that order for everything the head shows — Host (403, below),
  path (404), method (405), query (400), content type (415), declared length (413).
  With a wrong token we never *wait* for a body: if it came with the head (what every
  client sends in one write) its checks still come first, as in the original;
  otherwise the answer is 403 at once, where the original would have waited for the
  body and then perhaps said 400/422.
* **Host header (DNS rebinding).** On TCP only ``127.0.0.1:<port>``, ``localhost:<port>``
  and ``[::1]:<port>`` (or no Host, HTTP/1.0) are served; anything else is a 403, so a
  web page whose name was rebound to 127.0.0.1 gets nothing. The Unix socket is not
  checked: no browser can connect to it.
* **Bounded stalls.** A head must arrive within ``HEAD_TIMEOUT`` of the connection, a
  body within ``BODY_TIMEOUT`` of its head; a response is written within
  ``SEND_TIMEOUT``.
* **Bounded connections.** At most ``MAX_CONNECTIONS`` connections are open at once;
  when one more arrives, the oldest connection that has not yet shown the token is
  dropped. 1,100 stalled connections under ``ulimit -n 1024`` thus cost us 64 fds and
  leave the rest for the host's own work (rpc-info.json, starting the daemon): a
  handshake on stdio is answered while they are held. At start the soft
  ``RLIMIT_NOFILE`` is raised to the hard limit (``jst.fdlimit``, at the host's start).
* **The token** is compared in constant time (``hmac.compare_digest``).
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

import attrs
import h11
import trio

from jst.fdlimit import raise_open_file_limit
from jst.host import messages, nm

log = logging.getLogger("jst.host.linkrpc")

MAX_BODY = 2 * 1024 * 1024  # the original's default body limit
MAX_TORRENT_BASE64 = 900_000  # keeps a TorrentAdded frame under Chrome's 1 MiB (§4.3)
# A link-handler sends its whole request at once, over loopback: seconds are generous.
HEAD_TIMEOUT = 5.0
BODY_TIMEOUT = 10.0
SEND_TIMEOUT = 5.0
# A link-handler waits 30 s for its answer; past that nobody is listening for our 200.
DELIVER_TIMEOUT = 30.0
# After refusing a request whose body we did not read: let the client read the answer
# before the close (closing over unread data sends a reset that can destroy it).
LINGER_SECONDS = 1.0
LINGER_BYTES = 256 * 1024
# Link-handlers connect one at a time; 64 is far above real use and far below any fd limit.
MAX_CONNECTIONS = 64
ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
JSON_TYPE = b"application/json"


@attrs.frozen
class Reply:
    status: int
    body: bytes = b""
    content_type: bytes | None = None
    event: dict[str, Any] | None = None


@attrs.frozen
class Endpoint:
    """What a request is checked against: the token, and the Host values served."""

    token: str
    version: str
    pid: int
    # Lower-case Host values accepted (plus none at all); ``None``: no Host check.
    hosts: frozenset[bytes] | None = None
    # ``GET /daemon`` (jst status): the supervised daemon's pid, port and token, or None
    # while there is none. Served on the private Unix socket only (``hosts`` is None):
    # reaching it needs the 0700 directory and the host token, i.e. this user.
    daemon: Callable[[], dict[str, Any] | None] | None = attrs.field(default=None, eq=False)


def loopback_hosts(port: int) -> frozenset[bytes]:
    return frozenset(f"{name}:{port}".encode() for name in ("127.0.0.1", "localhost", "[::1]"))


@attrs.frozen
class Accepted:
    """A POST head that passed every check but the token's; the body decides the rest."""

    path: bytes
    content_type: bytes | None
    authorised: bool


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
    except RecursionError:
        return _text(400, "Failed to parse the request body as JSON: nested too deeply")
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


def _token_matches(given: str, token: str) -> bool:
    # Constant time; bytes because compare_digest refuses non-ASCII str.
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), token.encode("utf-8"))


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # json.loads joins valid pairs


def _replace_surrogates(text: str) -> str:
    """A file name that was not UTF-8 (a lone surrogate in the JSON) shown with U+FFFD."""
    return _LONE_SURROGATE.sub("\ufffd", text)


ROUTES = {b"/health": "GET", b"/add-magnet": "POST", b"/add-torrent": "POST"}


def check_head(
    endpoint: Endpoint, method: str, target: bytes, headers: Sequence[tuple[bytes, bytes]]
) -> Reply | Accepted:
    """Everything that can be decided before the body: a reply, or ``Accepted``."""
    fields = {name.lower(): value for name, value in headers}
    host = fields.get(b"host")
    if endpoint.hosts is not None and host is not None and host.lower() not in endpoint.hosts:
        return _text(403, "Forbidden: unexpected Host header")
    path, _, query_text = target.partition(b"?")
    if path == b"/daemon" and endpoint.hosts is None and endpoint.daemon is not None:
        return _daemon_reply(endpoint, endpoint.daemon, method, query_text)
    if path not in ROUTES:
        return Reply(404)
    if method != ROUTES[path]:
        return Reply(405)
    query = parse_qs(query_text.decode("utf-8", "replace"), keep_blank_values=True)
    if "token" not in query:
        return _text(400, "Failed to deserialize query string: missing field `token`")
    content_type = fields.get(b"content-type")
    if method == "POST":
        if not _is_json(content_type):
            return _text(415, "Expected request with `Content-Type: application/json`")
        length = fields.get(b"content-length", b"0")
        if length.isdigit() and int(length) > MAX_BODY:
            return Reply(413)
    authorised = _token_matches(query["token"][0], endpoint.token)
    if path != b"/health":
        return Accepted(path, content_type, authorised)
    if not authorised:
        return Reply(403)
    return _json_reply({"status": "ok", "pid": endpoint.pid, "version": endpoint.version})


def _daemon_reply(
    endpoint: Endpoint,
    daemon: Callable[[], dict[str, Any] | None],
    method: str,
    query_text: bytes,
) -> Reply:
    if method != "GET":
        return Reply(405)
    query = parse_qs(query_text.decode("utf-8", "replace"), keep_blank_values=True)
    if "token" not in query or not _token_matches(query["token"][0], endpoint.token):
        return Reply(403)
    info = daemon()
    return Reply(503) if info is None else _json_reply(info)


def handle_body(accepted: Accepted, body: bytes) -> Reply:
    """The rest of a POST: its JSON body (400/422), then the token (403)."""
    if accepted.path == b"/add-magnet":
        fields = _json_body(accepted.content_type, body, ("magnet",))
        if isinstance(fields, Reply):
            return fields
        if not accepted.authorised:
            return Reply(403)
        return _queued("Magnet link queued", messages.magnet_added(fields["magnet"]))
    fields = _json_body(accepted.content_type, body, ("file_name", "contents_base64"))
    if isinstance(fields, Reply):
        return fields
    if not accepted.authorised:
        return Reply(403)
    if len(fields["contents_base64"]) > MAX_TORRENT_BASE64:
        return Reply(413)
    name = _replace_surrogates(fields["file_name"])
    return _queued("Torrent file queued", messages.torrent_added(name, fields["contents_base64"]))


def handle(
    endpoint: Endpoint, method: str, target: bytes, headers: Sequence[tuple[bytes, bytes]],
    body: bytes,
) -> Reply:  # fmt: skip
    """One whole request (head and body) to its reply."""
    decided = check_head(endpoint, method, target, headers)
    return decided if isinstance(decided, Reply) else handle_body(decided, body)


# -- the trio side ------------------------------------------------------------------------------


class ConnectionLimit:
    """At most ``limit`` connections; evict the oldest one not yet authorised.

    A connection is *evictable* from its accept until its head passes the checks, and
    again while it lingers after a refusal; it is *busy* while a token holder's request
    is being delivered and answered.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._evictable: dict[object, trio.CancelScope] = {}  # oldest first
        self._busy = 0
        self.evicted = 0

    def admit(self, key: object, scope: trio.CancelScope) -> bool:
        """Register a new connection; False if it must be closed at once."""
        if len(self._evictable) + self._busy >= self.limit:
            if not self._evictable:
                return False  # every slot is a token holder's: the newcomer may retry
            oldest = next(iter(self._evictable))
            self._evictable.pop(oldest).cancel()
            self.evicted += 1
        self._evictable[key] = scope
        return True

    def mark_busy(self, key: object) -> bool:
        """Make ``key`` unevictable; False if it was evicted already (it is being closed)."""
        if self._evictable.pop(key, None) is None:
            return False
        self._busy += 1
        return True

    def mark_evictable(self, key: object, scope: trio.CancelScope) -> None:
        self._busy -= 1
        self._evictable[key] = scope

    def release(self, key: object, busy: bool) -> None:
        if busy:
            self._busy -= 1
        else:
            self._evictable.pop(key, None)


async def _next_event(conn: h11.Connection, stream: trio.abc.Stream) -> h11.Event | Reply | None:
    """h11's next event, receiving as needed; a ``Reply`` for a request h11 refuses;
    ``None`` when the client closed first, or h11 paused (we serve one request)."""
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            return _text(exc.error_status_hint, "Bad request")
        if isinstance(event, h11.Event):
            return event
        if event is h11.PAUSED:
            return None
        data = await stream.receive_some(65536)  # h11.NEED_DATA
        if not data:
            return None  # the client gave up (before its head, or half-way through its body)
        conn.receive_data(bytes(data))


async def _read_head(conn: h11.Connection, stream: trio.abc.Stream) -> h11.Request | Reply | None:
    event = await _next_event(conn, stream)
    return event if isinstance(event, h11.Request | Reply) else None


async def _read_body(conn: h11.Connection, stream: trio.abc.Stream) -> bytes | Reply | None:
    body = bytearray()
    while isinstance(event := await _next_event(conn, stream), h11.Data):
        body += event.data
        if len(body) > MAX_BODY:
            return Reply(413)
    if isinstance(event, h11.EndOfMessage):
        return bytes(body)
    return event if isinstance(event, Reply) else None


def _buffered_body(conn: h11.Connection) -> bytes | None:
    """The request's whole body if it has already arrived, without waiting for more."""
    body = bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            return None
        if isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return bytes(body)
        else:
            return None  # NEED_DATA: the rest has not come


def _response_bytes(conn: h11.Connection, reply: Reply) -> bytes:
    headers = [(b"content-length", str(len(reply.body)).encode()), (b"connection", b"close")]
    if reply.content_type is not None:
        headers.append((b"content-type", reply.content_type))
    # h11 lets a server answer from IDLE too: a garbled request still gets its 400.
    reason = HTTPStatus(reply.status).phrase.encode()
    data = conn.send(h11.Response(status_code=reply.status, headers=headers, reason=reason))
    return data + conn.send(h11.Data(data=reply.body)) + conn.send(h11.EndOfMessage())


class _Connection:
    """One link-handler connection: read, check, deliver, answer."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        endpoint: Endpoint,
        deliver: Callable[[dict[str, Any]], Awaitable[None]],
        limit: ConnectionLimit,
        scope: trio.CancelScope,
    ) -> None:
        self.stream = stream
        self.endpoint = endpoint
        self.deliver = deliver
        self.limit = limit
        self.scope = scope
        self.busy = False
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)

    async def run(self) -> None:
        reply = await self._reply()
        if reply is None:
            return  # closed, stalled or unusable: nothing to answer
        if reply.event is not None:
            with trio.move_on_after(DELIVER_TIMEOUT) as waited:
                await self.deliver(reply.event)  # waits while the event queue is full
            if waited.cancelled_caught:
                reply = _text(503, "The event queue is full")
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        with trio.move_on_after(SEND_TIMEOUT):
            await self.stream.send_all(_response_bytes(self.conn, reply))
        if not self._request_complete():
            await self._linger()

    def _request_complete(self) -> bool:
        """Whether the client sent nothing we have not read (a GET's end is one more event)."""
        if self.conn.their_state is h11.SEND_BODY:
            with contextlib.suppress(h11.RemoteProtocolError):
                self.conn.next_event()
        return self.conn.their_state is h11.DONE

    async def _reply(self) -> Reply | None:
        head: h11.Request | Reply | None = None
        with trio.move_on_after(HEAD_TIMEOUT):
            head = await _read_head(self.conn, self.stream)
        if head is None or isinstance(head, Reply):
            return head
        method = head.method.decode("ascii", "replace")
        decided = check_head(self.endpoint, method, head.target, head.headers)
        if isinstance(decided, Reply):
            return decided
        if not decided.authorised:
            buffered = _buffered_body(self.conn)
            return Reply(403) if buffered is None else handle_body(decided, buffered)
        self.busy = self.limit.mark_busy(self)  # a token holder: never evicted
        body: bytes | Reply | None = None
        with trio.move_on_after(BODY_TIMEOUT):
            body = await _read_body(self.conn, self.stream)
        if body is None or isinstance(body, Reply):
            return body
        return handle_body(decided, body)

    async def _linger(self) -> None:
        """Half-close and discard what the client still sends, briefly, as evictable."""
        if self.busy:
            self.limit.mark_evictable(self, self.scope)
            self.busy = False
        try:
            if isinstance(self.stream, trio.SocketStream):
                await self.stream.send_eof()
            received = 0
            with trio.move_on_after(LINGER_SECONDS):
                while received < LINGER_BYTES:
                    data = await self.stream.receive_some(65536)
                    if not data:
                        return
                    received += len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass


async def _serve_connection(
    stream: trio.abc.Stream,
    endpoint: Endpoint,
    deliver: Callable[[dict[str, Any]], Awaitable[None]],
    limit: ConnectionLimit,
) -> None:
    with trio.CancelScope() as scope:
        connection = _Connection(stream, endpoint, deliver, limit, scope)
        if not limit.admit(connection, scope):
            await stream.aclose()
            return
        try:
            async with stream:
                await connection.run()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        except Exception:
            log.exception("unexpected error serving a link-handler request")
        finally:
            limit.release(connection, connection.busy)


def connection_cap(fd_limit: int | None) -> int:
    """``MAX_CONNECTIONS``, or a quarter of a tiny fd limit: the rest stays in reserve."""
    if fd_limit is None:
        return MAX_CONNECTIONS
    return max(4, min(MAX_CONNECTIONS, fd_limit // 4))


async def _accept_loop(
    listener: trio.SocketListener,
    endpoint: Endpoint,
    deliver: Callable[[dict[str, Any]], Awaitable[None]],
    limit: ConnectionLimit,
    nursery: trio.Nursery,
) -> None:
    async with listener:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in ACCEPT_CAPACITY_ERRNOS:
                    raise
                # Out of fds for another reason than us (we hold at most MAX_CONNECTIONS).
                log.warning("link endpoint cannot accept: %s; retrying in 0.1 s", exc)
                await trio.sleep(0.1)
                continue
            nursery.start_soon(_serve_connection, stream, endpoint, deliver, limit)


async def _report_evictions(limit: ConnectionLimit) -> None:
    reported = 0
    while True:
        await trio.sleep(5)
        if limit.evicted != reported:
            log.warning(
                "link endpoint full: dropped %d unauthorised connection(s)",
                limit.evicted - reported,
            )
            reported = limit.evicted


async def serve(
    listeners: list[trio.SocketListener],
    token: str,
    version: str,
    deliver: Callable[[dict[str, Any]], Awaitable[None]],
    daemon: Callable[[], dict[str, Any] | None] | None = None,
) -> None:
    limit = ConnectionLimit(connection_cap(raise_open_file_limit()))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_report_evictions, limit)
        for listener in listeners:
            address = listener.socket.getsockname()
            tcp = listener.socket.family in (trio.socket.AF_INET, trio.socket.AF_INET6)
            endpoint = Endpoint(
                token,
                version,
                os.getpid(),
                loopback_hosts(address[1]) if tcp else None,
                None if tcp else daemon,
            )
            nursery.start_soon(_accept_loop, listener, endpoint, deliver, limit, nursery)
