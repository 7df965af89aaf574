"""jst-native-host's nursery tree and request handlers: the whole process in one place.

    trio.run(Host.run)
    └── root nursery ............ cancelled when the browser side ends (stdin EOF or a
        │                         read error, an oversized frame, stdout broken) or on
        │                         SIGINT/SIGTERM; that ends every task below
        ├── read_stdin .......... the only reader of stdin (§9.1): frames -> one task
        │                         per request
        ├── write_stdout ........ the only writer of stdout: whole frames from the
        │                         outbox channel, so responses and events never interleave
        ├── release_events ...... link-handler events -> outbox, when the gate is open
        ├── end_grace ........... opens the event gate 1 s after startup at the latest
        ├── after_startup ....... then linkrpc.serve, §4.3 HTTP for link-handlers -> events:
        │                         on 127.0.0.1 (the original's link-handlers) and on a
        │                         Unix socket in our private directory (ours; published
        │                         in rpc-info.json). Bound at once; served once the daemon
        │                         serves (or after LINK_SERVE_DELAY)
        ├── watch_signals
        ├── <request> ........... one per request (§9.3): a folder dialog or an opener
        │                         never blocks other requests or events
        ├── <opener reaper> ..... an xdg-open that outlives its request (desktop.py)
        ├── remove_stale_dirs ... control directories of dead hosts (a worker thread, after
        │                         startup)
        └── Supervisor._supervise  the io-daemon child, started before trio (launch.py;
                                  Windows: by the first handshake), restarted on crash;
                                  on cancel it closes the control channel, then SIGTERM,
                                  then SIGKILL (supervisor.py)

Cold start (issue 17): cli.py starts the daemon before importing trio, so the daemon's
imports overlap ours; the handshake answers as soon as rpc-info.json is updated, while
the daemon waits for its first config (supervisor.py). Imports only needed later (the
folder dialog and opener, the link endpoint's HTTP) happen when first used.

Event ordering (§2.5, §9.2): the extension drops events that arrive before its first
DaemonInfo, while clients that never handshake expect an event as the first frame. So
events wait while a handshake is in progress and during a 1 s grace period after start
(ended early by the first handshake's response); then they flow in arrival order.

rpc-info.json updates are serialised by ``_update_lock`` so each request's
read-merge-write and daemon push happen as one step (the file lock in ``store.py``
covers other processes).
"""

from __future__ import annotations

import logging
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs
import trio

from jst import __version__, faults
from jst.host import messages, nm
from jst.host.browser import detect_browser, extension_id_from_argv
from jst.host.control_server import (
    control_base,
    open_control_listener,
    open_link_listener,
    remove_stale_dirs,
)
from jst.host.launch import Prelaunched
from jst.host.profiles import HostRecord
from jst.host.roots import (
    ContainmentError,
    build_root,
    contained_target,
    initial_directory,
    root_json,
)
from jst.host.store import RpcInfoStore, StoreError
from jst.host.supervisor import DaemonUnavailable, Supervisor
from jst.rpcinfo import Browser, DownloadRoot
from jst.service import rootstat

log = logging.getLogger("jst.host")

STARTUP_GRACE = 1.0  # §9.2
EVENT_QUEUE = 32  # the original's capacity (§2.5); link-handlers wait when it is full
OUTBOX = 64
# After stdin EOF, requests already read get this long to answer. Short, so that host
# and daemon are still gone within 1 s of the browser closing the port; long enough for
# a first handshake to start the daemon on an idle machine.
EOF_ANSWER_SECONDS = 0.6
# Work not needed for the first DaemonInfo (importing the link endpoint's HTTP stack,
# sweeping old control directories) waits until the daemon serves, so that it does not
# take a core from the daemon's start; at most this long, well inside a link-handler's
# 1 s /health timeout (§7.2).
LINK_SERVE_DELAY = 0.4
HOST_VERSION = __version__


class EventGate:
    """Open when no one holds it; ``wait_open`` blocks while any hold is outstanding."""

    def __init__(self, holds: int = 0) -> None:
        self._holds = holds
        self._opened = trio.Event()
        if holds == 0:
            self._opened.set()

    def hold(self) -> None:
        self._holds += 1
        if self._opened.is_set():
            self._opened = trio.Event()

    def release(self) -> None:
        self._holds -= 1
        if self._holds == 0:
            self._opened.set()

    async def wait_open(self) -> None:
        while self._holds:
            await self._opened.wait()


@attrs.define(eq=False)
class Host:
    in_stream: trio.abc.ReceiveStream
    out_stream: trio.abc.SendStream
    store: RpcInfoStore
    argv: Sequence[str]
    prelaunched: Prelaunched | None = None  # the daemon cli.py started before trio
    first_read: trio.Event | None = None  # set once stdin's first chunk was dispatched
    record: HostRecord = attrs.field(init=False)
    roots: list[DownloadRoot] = attrs.field(factory=list)
    gate: EventGate = attrs.field(factory=lambda: EventGate(holds=1))
    _startup_hold: bool = True
    _update_lock: trio.Lock = attrs.field(factory=trio.Lock)
    _handshake_lock: trio.Lock = attrs.field(factory=trio.Lock)
    _nursery: trio.Nursery = attrs.field(init=False)
    _supervisor: Supervisor = attrs.field(init=False)
    _outbox: trio.MemorySendChannel[bytes | trio.Event] = attrs.field(init=False)
    _in_flight: int = 0  # requests received and not yet answered
    _all_answered: trio.Event = attrs.field(factory=trio.Event)
    _handshake_seen: bool = False

    async def run(self) -> None:
        outbox_tx, outbox_rx = trio.open_memory_channel[bytes | trio.Event](OUTBOX)
        events_tx, events_rx = trio.open_memory_channel[dict[str, Any]](EVENT_QUEUE)
        self._outbox = outbox_tx
        pre = self.prelaunched
        control = await open_control_listener(None if pre is None else pre.control)
        rpc_listeners: list[trio.SocketListener] = await trio.open_tcp_listeners(
            0, host="127.0.0.1"
        )
        link = await open_link_listener(control)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if pre is None:
                    self._supervisor = Supervisor(nursery, control)
                else:
                    self._supervisor = Supervisor.adopt(nursery, control, pre)
                self.record = self._initial_record(rpc_listeners[0].socket.getsockname()[1])
                if link is not None:
                    rpc_listeners.append(link[0])
                    self.record.link_address = link[1]
                nursery.start_soon(self._write_stdout, outbox_rx)
                nursery.start_soon(self._watch_signals)
                nursery.start_soon(self._after_startup, rpc_listeners, events_tx, pre is not None)
                nursery.start_soon(self._release_events, events_rx)
                nursery.start_soon(self._end_grace)
                nursery.start_soon(self._read_stdin)
                await self._write_startup_record()
        finally:
            self._supervisor.close()
            with trio.CancelScope(shield=True):
                await control.aclose()
        log.info("native host exiting")

    def _initial_record(self, rpc_port: int) -> HostRecord:
        name, binary = detect_browser()
        extension_id = extension_id_from_argv(self.argv)
        log.info(
            "native host %s pid %d: browser %s (%s), extension %s, link-handler port %d",
            HOST_VERSION, os.getpid(), name, binary or "-", extension_id, rpc_port,
        )  # fmt: skip
        return HostRecord(
            pid=os.getpid(),
            port=rpc_port,
            token=str(uuid.uuid4()),
            started=int(time.time()),
            browser=Browser(name=name, binary=binary, extension_id=extension_id),
        )

    async def _write_startup_record(self) -> None:
        # §2.8 step 4: a temporary pid-keyed entry so link-handlers can find us at once.
        # Each write costs two fsyncs: when the browser's handshake is already here, its
        # own write (the same record, with the install id) is the only one made.
        if self.first_read is not None:
            await self.first_read.wait()
        async with self._update_lock:
            if self._handshake_seen:
                return
            try:
                self.roots = await trio.to_thread.run_sync(self.store.update, self.record)
            except StoreError as exc:
                log.error("startup write of rpc-info.json failed: %s", exc)

    async def _after_startup(
        self,
        listeners: list[trio.SocketListener],
        events: trio.MemorySendChannel[dict[str, Any]],
        sweep: bool,
    ) -> None:
        with trio.move_on_after(LINK_SERVE_DELAY):
            await self._supervisor.wait_settled()
        if sweep:
            self._nursery.start_soon(trio.to_thread.run_sync, remove_stale_dirs, control_base())
        from jst.host import linkrpc

        await linkrpc.serve(
            listeners, self.record.token, HOST_VERSION, events.send, self._daemon_info
        )

    # -- stdio ---------------------------------------------------------------------------

    def _daemon_info(self) -> dict[str, Any] | None:
        """``GET /daemon`` on the private link socket (linkrpc.py), for ``jst status``."""
        return self._supervisor.describe()

    def stop(self, why: str) -> None:
        log.info("stopping: %s", why)
        self._nursery.cancel_scope.cancel()

    async def _read_stdin(self) -> None:
        decoder = nm.FrameDecoder()
        try:
            while True:
                data = await self.in_stream.receive_some(65536)
                if not data:
                    decoder.end_of_input()
                    await self._finish_answers()
                    return self.stop("stdin closed")
                decoder.receive_data(bytes(data))
                while (body := decoder.next_frame()) is not None:
                    self._dispatch(body)
        except nm.RemoteFramingError as exc:
            self.stop(f"native messaging stream broken: {exc}")
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.stop(f"cannot read stdin: {exc}")

    async def _finish_answers(self) -> None:
        """After stdin EOF: let requests already received answer, briefly.

        The original answered every request it had read before seeing EOF (it is
        serial), and clients rely on it: "write one request, close stdin, read the
        reply". A request that needs longer (an open folder dialog) is abandoned.
        """
        with trio.move_on_after(EOF_ANSWER_SECONDS):
            while self._in_flight:
                await self._all_answered.wait()
            written = trio.Event()
            await self._outbox.send(written)
            await written.wait()

    async def _write_stdout(self, outbox: trio.MemoryReceiveChannel[bytes | trio.Event]) -> None:
        try:
            async for frame in outbox:
                if isinstance(frame, trio.Event):
                    frame.set()  # everything queued before it has been written
                    continue
                await self.out_stream.send_all(frame)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.stop(f"cannot write stdout: {exc}")

    async def _send(self, message: dict[str, Any]) -> None:
        try:
            frame = nm.encode_frame(message)
        except nm.OutboundTooLarge as exc:
            log.error("not sending a frame Chrome would refuse: %s", exc)
            if "id" not in message:
                return
            frame = nm.encode_frame(messages.failure(message["id"], str(exc)))
        await self._outbox.send(frame)

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                self.stop(signal.Signals(signum).name)

    # -- events ----------------------------------------------------------------------------

    async def _release_events(self, events: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
        async for event in events:
            await self.gate.wait_open()
            await self._send(event)

    def _end_startup_hold(self) -> None:
        if self._startup_hold:
            self._startup_hold = False
            self.gate.release()

    async def _end_grace(self) -> None:
        await trio.sleep(STARTUP_GRACE)
        self._end_startup_hold()

    # -- requests ----------------------------------------------------------------------------

    def _dispatch(self, body: bytes) -> None:
        try:
            request = messages.parse_request(body)
        except Exception:  # our bug: one bad frame must not end the host
            log.exception("ignoring a frame that could not be parsed")
            return
        match request:
            case messages.Rejected(None, reason):
                log.warning("ignoring a request without a string id: %r", reason)
            case messages.Rejected(str() as request_id, reason):
                log.warning("rejecting request %r: %r", request_id, reason)
                self._start(self._answer, request, self._rejected_response)
            case messages.Handshake():
                # Held from here, not from the task's start, so no event can slip out
                # between the frame's arrival and the response.
                self.gate.hold()
                self._handshake_seen = True
                self._start(self._handshake, request)
            case messages.PickDownloadDirectory():
                self._start(self._answer, request, self._pick_response)
            case messages.DeleteDownloadRoot():
                self._start(self._answer, request, self._delete_response)
            case messages.OpenPath():
                self._start(self._answer, request, self._open_response)

    def _start(self, handler: Callable[..., Awaitable[None]], *args: Any) -> None:
        self._in_flight += 1
        if self._all_answered.is_set():
            self._all_answered = trio.Event()

        async def counted() -> None:
            try:
                await handler(*args)
            finally:
                self._in_flight -= 1
                if not self._in_flight:
                    self._all_answered.set()

        self._nursery.start_soon(counted)

    async def _rejected_response(self, req: messages.Rejected) -> dict[str, Any]:
        await trio.lowlevel.checkpoint()
        assert req.id is not None
        return messages.failure(req.id, req.reason)

    async def _answer(self, req: Any, respond: Callable[[Any], Awaitable[dict[str, Any]]]) -> None:
        """Run one request to its one response; our own bug is an error reply, not a crash."""
        try:
            response = await respond(req)
        except Exception as exc:
            log.exception("internal error handling %s", req)
            response = messages.failure(req.id, f"Internal error: {exc}")
        await self._send(response)

    async def _handshake(self, req: messages.Handshake) -> None:
        try:
            async with self._handshake_lock:
                await self._answer(req, self._handshake_response)
        finally:
            self._end_startup_hold()
            self.gate.release()

    async def _handshake_response(self, req: messages.Handshake) -> dict[str, Any]:
        async with self._update_lock:
            self.record.browser.extension_id = req.extension_id
            self.record.install_id = req.install_id
            try:
                self.roots = await trio.to_thread.run_sync(self.store.update, self.record)
                self.roots = await trio.to_thread.run_sync(rootstat.refresh_all, self.roots)
            except StoreError as exc:
                log.error("handshake: %s", exc)
                return messages.failure(req.id, "Failed to update extension ID or install ID")
            # ensure_running pushes it to a running daemon, or to the one it starts.
            self._supervisor.configure(req.extension_id, self.roots)
        try:
            port, token = await self._supervisor.ensure_running(req.install_id)
        except DaemonUnavailable as exc:
            log.error("handshake: %s", exc)
            return messages.failure(req.id, str(exc))
        roots = [root_json(r) for r in self.roots]
        faults.point("host.handshake.before-reply")
        return messages.daemon_info(req.id, port, token, HOST_VERSION, roots)

    async def _save_roots(self, roots: list[DownloadRoot]) -> None:
        """Write this profile's roots (explicit overwrite) and push them to the daemon.

        The caller holds ``_update_lock``.
        """
        self.record.roots = roots
        try:
            self.roots = await trio.to_thread.run_sync(self.store.update, self.record)
        finally:
            self.record.roots = None
        await self._supervisor.update_config(self.record.extension_id, self.roots)

    async def _pick_response(self, req: messages.PickDownloadDirectory) -> dict[str, Any]:
        from jst.host import desktop  # the folder dialog (and D-Bus): only when asked

        try:
            chosen = await desktop.pick_folder(initial_directory(self.roots))
        except desktop.DesktopError as exc:
            log.error("folder dialog: %s", exc)
            return messages.failure(req.id, str(exc))
        if chosen is None:
            return messages.failure(req.id, "User cancelled folder selection")
        root = build_root(chosen)
        faults.point("host.pick.before-save")
        async with self._update_lock:
            roots = list(self.roots)
            if not any(r.path == root.path for r in roots):
                roots.append(root)
            try:
                await self._save_roots(roots)
            except StoreError as exc:
                log.error("pickDownloadDirectory: %s", exc)
                return messages.failure(req.id, f"Failed to save download root: {exc}")
        log.info("download root added: %s (%s)", root.path, root.key)
        return messages.root_added(req.id, root_json(root))

    async def _delete_response(self, req: messages.DeleteDownloadRoot) -> dict[str, Any]:
        async with self._update_lock:
            remaining = [r for r in self.roots if r.key != req.key]
            if len(remaining) == len(self.roots):
                return messages.failure(req.id, f"Root not found: {req.key}")
            try:
                await self._save_roots(remaining)
            except StoreError as exc:
                log.error("deleteDownloadRoot: %s", exc)
                return messages.failure(req.id, f"Failed to save download roots: {exc}")
        log.info("download root removed: %s", req.key)
        return messages.root_removed(req.id, req.key)

    async def _open_response(self, req: messages.OpenPath) -> dict[str, Any]:
        from jst.host import desktop

        root = next((r for r in self.roots if r.key == req.root_key), None)
        if root is None:
            return messages.failure(req.id, f"Root not found: {req.root_key}")
        try:
            target = await trio.to_thread.run_sync(contained_target, root.path, req.path)
            await desktop.open_path(target, req.reveal, self._nursery)
        except (ContainmentError, desktop.DesktopError) as exc:
            return messages.failure(req.id, str(exc))
        return messages.success(req.id)
