"""Streams: files served over ``/stream/<token>`` while they download (STREAMING.md).

Theory of operation
-------------------
Three owners, three lifetimes:

* ``StreamHub``, one per daemon (``hub(state)``): the capability table (token → stream)
  and the file index (file path → open streams of it) that verified writes use. It only
  ever holds streams that are open, so its size is bounded by the sessions' limits.
* ``SessionStreams``, one per authenticated ``/io`` session, created and closed by the
  session nursery in ``mux.serve_session``: the engine's stream ids, and the handlers of
  STREAM_OPEN / STREAM_HAVE / STREAM_CLOSE. When the session ends, ``close_all`` closes
  every stream it opened.
* ``Stream``: one open file. Its availability is an ``IntervalSet`` that only grows
  (``have``, STREAM_HAVE, verified ``/write``); each growth sets the stream's ``changed``
  event and replaces it, which wakes every reader waiting on that stream: no polling, and
  a reader whose byte is still missing goes back to sleep.

Readers (HTTP responses in progress, streamhttp.py) run in their HTTP connection's
task, not in the session nursery: the bytes must go out on that connection's socket.
They are tied to the stream instead: each reader registers its cancel scope in
``Stream.readers``, and ``Stream.close`` cancels them all, so STREAM_CLOSE and the end
of the session end every response in progress at once, including one blocked sending a
STREAM_NEED into a full outbound queue.

Nothing here logs a token (the URL is a capability); streams are named by session id.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import weakref

import attrs
import trio

from jst.daemon import fileops, streamwire, wire
from jst.daemon.errors import Forbidden, HttpError
from jst.daemon.intervals import IntervalSet
from jst.daemon.ioqueue import Outbox
from jst.daemon.paths import InvalidPath, NotRegularFile, Target
from jst.daemon.state import DaemonState
from jst.daemon.streamwire import OpenStatus

log = logging.getLogger("jst.daemon.stream")

# Spec minimums (§1, issue): at least 64 streams per session, 16 readers per stream.
# Each open stream costs a few hundred bytes; each reader is an HTTP connection, so the
# reader cap is what stops one URL from holding an unbounded number of file descriptors.
MAX_STREAMS_PER_SESSION = 64
MAX_READERS_PER_STREAM = 16
# 128 random bits is the spec's minimum; 192 costs nothing (32 URL-safe characters).
TOKEN_BYTES = 24
# Players read ahead (a <video> opens with `bytes=0-`): asking the engine for a whole
# remaining file would make it fetch pieces nobody plays after the next seek. A few
# MiB is several seconds of even high-bitrate video, and a handful of torrent pieces.
NEED_CLIP = 4 * 1024 * 1024

CONTENT_TYPES = {
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".m4a": "audio/mp4",
    ".mov": "video/quicktime",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
    ".mka": "audio/x-matroska",
    ".avi": "video/x-msvideo",
    ".ts": "video/mp2t",
    ".ogv": "video/ogg",
    ".ogg": "audio/ogg",
    ".opus": "audio/ogg",
    ".mp3": "audio/mpeg",
    ".flac": "audio/flac",
    ".wav": "audio/wav",
    ".aac": "audio/aac",
}
OCTET_STREAM = "application/octet-stream"


def content_type_for(path: str) -> str:
    return CONTENT_TYPES.get(os.path.splitext(path)[1].lower(), OCTET_STREAM)


def resolve_target(state: DaemonState, root_key: str, path: str) -> Target:
    """The file routes' root and path rules (§5.6): the one call site of path resolution.

    Raises ``Forbidden`` (unknown root) or ``InvalidPath``; the filesystem checks
    (missing root folder, symlink escape) are in ``check_file`` and ``open_file``.
    """
    return state.target(root_key, path)


def check_file(target: Target) -> None:
    """Blocking (worker thread): the root folder exists and the path stays inside it.

    The file itself may not exist yet (nothing downloaded): only the root and escape
    checks of ``fileops.open_for_read`` count here.
    """
    try:
        fileops.open_for_read(target).close()
    except (FileNotFoundError, NotRegularFile):
        pass  # not written yet; or a folder, whose reads end at once (as a short file)
    except HttpError as exc:
        if exc.status != 404 or isinstance(exc, fileops.RootUnavailable):
            raise


def open_file(target: Target) -> int:
    """Blocking (worker thread): a read-only descriptor of a regular file in the root,
    resolved race-free (fsroot.py); a missing file is ``FileNotFoundError``, anything
    else refused is the ``HttpError`` of the file routes."""
    try:
        return fileops.open_for_read(target).fd
    except HttpError as exc:
        if exc.status == 404 and not isinstance(exc, fileops.RootUnavailable):
            raise FileNotFoundError(errno.ENOENT, "not written yet") from None
        raise


class StreamClosed(Exception):
    """The stream closed (STREAM_CLOSE, or its session ended) while a reader used it."""


@attrs.define(eq=False)
class Stream:
    stream_id: int
    token: str
    target: Target
    length: int
    content_type: str
    out: Outbox  # the session's outbound queue, for STREAM_NEED
    available: IntervalSet = attrs.field(factory=IntervalSet)
    changed: trio.Event = attrs.field(factory=trio.Event)
    readers: set[trio.CancelScope] = attrs.field(factory=set)
    closed: bool = False

    @property
    def file_key(self) -> str:
        return self.target.path

    def add(self, start: int, end: int) -> None:
        """Mark ``[start, end)`` available (clipped to the file) and wake the waiters."""
        if self.available.add(max(start, 0), min(end, self.length)):
            self.changed.set()
            self.changed = trio.Event()

    def need_range(self, pos: int, end: int) -> tuple[int, int]:
        """The missing range a reader blocked at ``pos`` asks for (§5 "players read
        ahead"): up to the next available byte, ``NEED_CLIP`` and the request's end."""
        limit = min(end, pos + NEED_CLIP)
        next_start = self.available.next_start(pos)
        if next_start is not None:
            limit = min(limit, next_start)
        return pos, limit

    async def send_need(self, start: int, end: int) -> None:
        if self.closed:
            raise StreamClosed
        try:
            await self.out.put(streamwire.encode_stream_need(self.stream_id, start, end))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise StreamClosed from exc  # the session's writer is gone

    def close(self) -> None:
        self.closed = True
        for scope in self.readers:
            scope.cancel()
        self.readers.clear()
        self.changed.set()


@attrs.define(eq=False)
class StreamHub:
    """Every open stream of the daemon, by capability token and by file."""

    port: int = 0  # the daemon's listening port, for the URLs (DaemonState.port)
    by_token: dict[str, Stream] = attrs.field(factory=dict)
    by_file: dict[str, set[Stream]] = attrs.field(factory=dict)

    def add(self, stream: Stream) -> None:
        self.by_token[stream.token] = stream
        self.by_file.setdefault(stream.file_key, set()).add(stream)

    def remove(self, stream: Stream) -> None:
        self.by_token.pop(stream.token, None)
        peers = self.by_file.get(stream.file_key)
        if peers is not None:
            peers.discard(stream)
            if not peers:
                del self.by_file[stream.file_key]

    def lookup(self, token: str) -> Stream | None:
        return self.by_token.get(token)

    def url(self, token: str) -> str:
        return f"http://127.0.0.1:{self.port}/stream/{token}"


# DaemonState is an unhashable attrs class, so its hub is found by identity and
# forgotten with it (one state per daemon process; tests may build several).
_hubs: dict[int, StreamHub] = {}


def hub(state: DaemonState) -> StreamHub:
    found = _hubs.get(id(state))
    if found is None:
        found = _hubs[id(state)] = StreamHub(port=state.port)
        weakref.finalize(state, _hubs.pop, id(state), None)
    return found


def on_verified_write(
    state: DaemonState, target: Target, offset: int, size: int, expected_sha1: str | None
) -> None:
    """The ``POST /write`` hook: a write checked against ``X-Expected-SHA1`` marks its
    range available in every open stream of that file; an unverified one marks nothing."""
    if expected_sha1 is None or not size:
        return
    peers = hub(state).by_file.get(target.path)
    if peers:
        for stream in list(peers):
            stream.add(offset, offset + size)


class SessionStreams:
    """The streams one ``/io`` session opened (see the module notes)."""

    def __init__(self, state: DaemonState, out: Outbox) -> None:
        self.state = state
        self.hub = hub(state)
        self.out = out
        self.streams: dict[int, Stream] = {}

    async def receive(self, frame: wire.Frame) -> None:
        """Handle one authenticated frame with an opcode in ``STREAM_OPCODES``."""
        request = streamwire.parse_stream_frame(frame)
        match request:
            case streamwire.StreamOpen():
                await self.open(request, frame.request_id)
            case streamwire.OpenRefused(stream_id, reason):
                await self.reply(frame.request_id, stream_id, OpenStatus.INVALID_REQUEST, reason)
            case streamwire.StreamHave(stream_id, ranges):
                stream = self.streams.get(stream_id)
                if stream is not None:
                    for start, end in ranges:
                        stream.add(start, end)
            case streamwire.StreamClose(stream_id):
                self.close(stream_id)
            case wire.UnknownOpcode():
                await self.out.put(wire.encode_error(frame.request_id, wire.UNKNOWN_OPCODE))
            case None:
                pass

    async def reply(self, request_id: int, stream_id: int, status: int, text: str) -> None:
        await self.out.put(streamwire.encode_stream_opened(request_id, stream_id, status, text))

    async def open(self, request: streamwire.StreamOpen, request_id: int) -> None:
        sid = request.stream_id
        if sid in self.streams:
            await self.reply(request_id, sid, OpenStatus.DUPLICATE_ID, "stream id already open")
            return
        if len(self.streams) >= MAX_STREAMS_PER_SESSION:
            reason = f"too many streams in this session (at most {MAX_STREAMS_PER_SESSION})"
            await self.reply(request_id, sid, OpenStatus.TOO_MANY_STREAMS, reason)
            return
        try:
            target = resolve_target(self.state, request.root_key, request.path)
            if target.is_root:
                raise InvalidPath()  # a stream is a file, never the root folder
            # Inline in the session's read loop, on purpose: a STREAM_HAVE right behind
            # this STREAM_OPEN must find the stream open. Opening is rare; one thread hop.
            await trio.to_thread.run_sync(check_file, target)
        except Forbidden:
            await self.reply(request_id, sid, OpenStatus.UNKNOWN_ROOT, "Invalid root key")
            return
        except fileops.RootUnavailable:
            reason = "Download root folder is not available"
            await self.reply(request_id, sid, OpenStatus.ROOT_UNAVAILABLE, reason)
            return
        except (InvalidPath, fileops.PathEscapesRoot, HttpError, OSError):
            await self.reply(request_id, sid, OpenStatus.INVALID_PATH, "Invalid path")
            return
        if sid in self.streams:  # the same id opened again meanwhile: cannot happen
            return  # (the read loop is sequential), but never replace a live stream
        content_type = request.content_type or content_type_for(request.path)
        stream = Stream(
            sid, secrets.token_urlsafe(TOKEN_BYTES), target, request.length, content_type, self.out
        )
        for start, end in request.have:
            stream.add(start, end)
        self.streams[sid] = stream
        self.hub.add(stream)
        log.debug("stream %d opened (%d bytes, %s)", sid, request.length, content_type)
        await self.reply(request_id, sid, OpenStatus.OK, self.hub.url(stream.token))

    def close(self, stream_id: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            self.hub.remove(stream)
            stream.close()
            log.debug("stream %d closed", stream_id)

    def close_all(self) -> None:
        for stream_id in list(self.streams):
            self.close(stream_id)
