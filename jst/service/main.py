"""``jst service``'s nursery tree and request handlers: the whole process in one place.

    trio.run(Service.run)            (holds service.lock for its whole life)
    └── root nursery ................ cancelled by SIGINT/SIGTERM or a "stop" request;
        │                             every daemon is stopped on the way out (< 2 s)
        ├── serve_socket ............ service.sock: one task per client, one request each
        ├── linkrpc.serve ........... the link-handler endpoint (PROTOCOL.md §4.3) on
        │                             127.0.0.1 and link.sock -> kept events
        ├── watch_signals
        ├── watch_idle .............. with --idle-exit: no io-daemon that long -> stop
        ├── launch_browser .......... once, with --launch-browser (browserlaunch.py)
        └── per install id, from its first endpoint request on:
            ├── Supervisor._supervise  the io-daemon (host/supervisor.py): restarted
            │                          after a crash on the same listening socket; it
            │                          watches our pid and its control channel, so a
            │                          SIGKILLed service leaves no daemon
            ├── accept_links ......... the daemon's --service-link -> channel.Peer.run
            ├── deliver_events ....... kept events -> the daemon, while it has an
            │                          authenticated /control client
            └── watch_roots .......... root availability every ROOT_CHECK seconds while
                                       a /control client is connected

The service is the only writer of ``rpc-info.json`` in this mode (store.py's lock and
merge, as a host): one profile per install id, whose pid/port/token are the service's
link endpoint, so ``jst-link-handler`` delivers to it as to a host. Daemons never write
configuration; their ``/roots``, ``/open`` and ``/control`` ask us over the channel.

Events (SERVICE.md §6): a link-handler event goes to the install id used most recently
and is kept here — not in a daemon, so a daemon crash loses nothing — until a /control
client of that install is connected: at most ``MAX_EVENTS``, each at most ``EVENT_TTL``
seconds, oldest dropped first. An event is handed to the daemon once; the daemon sends it
to each authenticated client once and says to how many; zero means "keep it".
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import socket
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

import attrs
import trio

from jst import __version__
from jst.host import desktop, linkrpc
from jst.host.browser import MAX_ANCESTORS, ancestors, choose_browser
from jst.host.control_server import ControlListener, open_control_listener
from jst.host.launch import daemon_command
from jst.host.profiles import HostRecord
from jst.host.roots import (
    ContainmentError,
    build_root,
    contained_target,
    initial_directory,
    root_json,
)
from jst.host.store import RpcInfoStore, StoreError
from jst.host.supervisor import DaemonState, DaemonUnavailable, Supervisor
from jst.rpcinfo import Browser, DownloadRoot
from jst.service import paths, rootstat
from jst.service.channel import ChannelError, Peer, Reply

log = logging.getLogger("jst.service")

MAX_EVENTS = 64
EVENT_TTL = 600.0
ROOT_CHECK = 5.0  # SERVICE.md: at least every 10 s while a /control client is connected
MAX_REQUEST = 64 * 1024  # a service.sock request line
REQUEST_READ_TIMEOUT = 5.0
HELLO_TIMEOUT = 5.0
EVENT_HANDOFF_TIMEOUT = 5.0
MAX_INSTALL_ID = 256


class ServiceError(Exception):
    """A request cannot be served; the message is the client's error text."""


@attrs.define(eq=False)
class KeptEvents:
    """Link-handler events waiting for a /control client (bounded in count and age)."""

    items: deque[tuple[float, dict[str, Any]]] = attrs.field(factory=deque)

    def prune(self) -> None:
        cutoff = time.monotonic() - EVENT_TTL
        while self.items and (self.items[0][0] < cutoff or len(self.items) > MAX_EVENTS):
            self.items.popleft()

    def add(self, event: dict[str, Any], stamp: float | None = None) -> None:
        self.items.append((time.monotonic() if stamp is None else stamp, event))
        self.prune()


@attrs.define(eq=False)
class Install:
    install_id: str
    supervisor: Supervisor
    control: ControlListener
    link_listener: trio.SocketListener
    link_address: str
    record: HostRecord
    roots: list[DownloadRoot] = attrs.field(factory=list)
    pushed: list[dict[str, Any]] | None = None  # the control roots the daemon last got
    peer: Peer | None = None
    clients: int = 0  # authenticated /control clients at its daemon
    events: KeptEvents = attrs.field(factory=KeptEvents)
    last_used: float = 0.0
    lock: trio.Lock = attrs.field(factory=trio.Lock)  # its rpc-info updates, one at a time
    picking: bool = False
    _changed: trio.Event = attrs.field(factory=trio.Event)

    def changed(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self, within: float = float("inf")) -> None:
        with trio.move_on_after(within):
            await self._changed.wait()


def browser_of(pid: int) -> tuple[str, str]:
    """§2.8 step 2 for the process ``pid`` (the one-shot host): its ancestors' browser."""
    return choose_browser(ancestors(MAX_ANCESTORS, pid))


@attrs.define(eq=False)
class Service:
    store: RpcInfoStore
    runtime: Path
    launch_browser: bool = False
    daemon_idle_exit: float | None = None
    idle_exit: float | None = None  # SERVICE.md §1: end with no io-daemon for this long
    in_flight: int = 0  # service.sock requests being answered
    installs: dict[str, Install] = attrs.field(factory=dict)
    orphans: KeptEvents = attrs.field(factory=KeptEvents)  # events before any install
    link_token: str = attrs.field(factory=lambda: str(uuid.uuid4()))
    link_port: int = 0
    link_address: str | None = None
    _installs_lock: trio.Lock = attrs.field(factory=trio.Lock)
    _nursery: trio.Nursery = attrs.field(init=False)

    async def run(self, sock_listener: trio.SocketListener) -> None:
        rpc_listeners: list[trio.SocketListener] = await trio.open_tcp_listeners(
            0, host="127.0.0.1"
        )
        self.link_port = rpc_listeners[0].socket.getsockname()[1]
        link_path = self.runtime / paths.LINK_SOCKET_NAME
        try:
            rpc_listeners.append(await bind_service_socket(link_path))  # a stale one goes
            self.link_address = f"unix:{link_path}"
        except OSError as exc:
            log.warning("no link-handler socket at %s: %s", link_path, exc)
        log.info(
            "jst service %s pid %d: %s, link-handler port %d",
            __version__, os.getpid(), self.runtime, self.link_port,
        )  # fmt: skip
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._watch_signals)
                nursery.start_soon(
                    linkrpc.serve, rpc_listeners, self.link_token, __version__, self._link_event
                )
                nursery.start_soon(self._serve_socket, sock_listener)
                if self.idle_exit is not None:
                    nursery.start_soon(self._watch_idle, self.idle_exit)
                if self.launch_browser:
                    from jst.service import browserlaunch

                    nursery.start_soon(trio.to_thread.run_sync, browserlaunch.launch_once,
                                       self.store.path)  # fmt: skip
        finally:
            for install in self.installs.values():
                install.supervisor.close()
                with trio.CancelScope(shield=True):
                    await install.control.aclose()
            with contextlib.suppress(OSError):
                os.unlink(link_path)
        log.info("jst service exiting")

    def stop(self, why: str) -> None:
        log.info("stopping: %s", why)
        self._nursery.cancel_scope.cancel()

    async def _watch_idle(self, seconds: float) -> None:
        """Exit once no io-daemon has been running (or starting) for ``seconds``. With
        ``--daemon-idle-exit`` this ends the service some time after its last client."""
        idle_since = time.monotonic()
        tick = max(0.05, min(1.0, seconds / 4))
        while True:
            await trio.sleep(tick)
            busy = self.in_flight > 0 or any(
                i.supervisor.state is not DaemonState.STOPPED or i.clients
                for i in self.installs.values()
            )
            now = time.monotonic()
            if busy:
                idle_since = now
            elif now - idle_since >= seconds:
                self.stop(f"no io-daemon for {seconds:g} s (--idle-exit)")
                return

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                self.stop(signal.Signals(signum).name)

    # -- service.sock -------------------------------------------------------------------

    async def _serve_socket(self, listener: trio.SocketListener) -> None:
        async def handler(stream: trio.SocketStream) -> None:
            try:
                await self._serve_client(stream)
            except Exception:
                log.exception("unexpected error on service.sock")

        await trio.serve_listeners(handler, [listener])

    async def _serve_client(self, stream: trio.SocketStream) -> None:
        async with stream:
            data = bytearray()
            with trio.move_on_after(REQUEST_READ_TIMEOUT):
                while b"\n" not in data and len(data) <= MAX_REQUEST:
                    try:
                        chunk = await stream.receive_some(65536)
                    except (trio.BrokenResourceError, OSError):
                        return
                    if not chunk:
                        break
                    data += chunk
            self.in_flight += 1
            try:
                reply = await self.handle_request(bytes(data.partition(b"\n")[0]))
            finally:
                self.in_flight -= 1
            try:
                await stream.send_all(json.dumps(reply).encode() + b"\n")
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return
            if reply.get("stopping"):
                self.stop("stop requested")

    async def handle_request(self, line: bytes) -> dict[str, Any]:
        try:
            message = json.loads(line) if len(line) <= MAX_REQUEST else None
        except (UnicodeDecodeError, ValueError, RecursionError):
            message = None
        if not isinstance(message, dict):
            return {"error": "Malformed request: expected one JSON object"}
        match message.get("op"):
            case "get_browser_endpoint":
                try:
                    return await self.endpoint(message)
                except ServiceError as exc:
                    return {"error": str(exc)}
            case "status":
                return self.status()
            case "stop":
                return {"stopping": True, "pid": os.getpid()}
            case other:
                return {"error": f"Unknown request {other!r}"}

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "version": __version__,
            "runtime_dir": str(self.runtime),
            "link_port": self.link_port,
            "installs": [
                {
                    "install_id": i.install_id,
                    "state": i.supervisor.state.value,
                    "port": i.supervisor.port,
                    # for jst status's /stats (removed before display); service.sock is
                    # private to this user, who may ask for the endpoint anyway
                    "token": i.supervisor.token,
                    "failure": i.supervisor.failure,
                    "control_clients": i.clients,
                    "kept_events": len(i.events.items),
                }
                for i in self.installs.values()
            ],
        }

    # -- endpoint requests ------------------------------------------------------------------

    async def endpoint(self, message: dict[str, Any]) -> dict[str, Any]:
        install_id = message.get("installId")
        extension_id = message.get("extensionId")
        pid = message.get("pid")
        if install_id is not None and (
            not isinstance(install_id, str) or not install_id or len(install_id) > MAX_INSTALL_ID
        ):
            raise ServiceError("'installId' must be a non-empty string")
        if extension_id is not None and not isinstance(extension_id, str):
            raise ServiceError("'extensionId' must be a string")
        if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0):
            raise ServiceError("'pid' must be a positive integer")
        if install_id is None:
            install_id = await trio.to_thread.run_sync(self._last_install_id)
            if install_id is None:
                raise ServiceError("No installId given and no JSTorrent profile is known yet")
        install = await self._install(install_id)
        browser = await trio.to_thread.run_sync(browser_of, pid) if pid is not None else None
        async with install.lock:
            record = install.record
            record.started = int(time.time())
            if extension_id is not None:
                record.browser.extension_id = extension_id
            if browser is not None and browser[0] != "Unknown":
                record.browser.name, record.browser.binary = browser
            try:
                install.roots = await trio.to_thread.run_sync(self._update_refreshed, record)
            except StoreError as exc:
                log.error("endpoint request: %s", exc)
                raise ServiceError(f"Failed to update rpc-info.json: {exc}") from exc
            install.supervisor.configure(record.extension_id, install.roots)
        self._retry_after_giving_up(install)
        try:
            port, token = await install.supervisor.ensure_running(install_id)
        except DaemonUnavailable as exc:
            raise ServiceError(str(exc)) from exc
        install.last_used = time.monotonic()
        self._adopt_orphans(install)
        await self._push_roots(install)
        return {
            "ip": "127.0.0.1",
            "port": port,
            "token": token,
            "version": __version__,
            "roots": [root_json(r) for r in install.roots],
        }

    def _retry_after_giving_up(self, install: Install) -> None:
        """A host lives as long as a browser session and may give up for good after a
        crash loop; the service lives for weeks: an endpoint request after it gave up
        (the extension backs off between them) tries again, same token, same port if
        it is free."""
        old = install.supervisor
        if old.failure is None:
            return
        log.warning("install %s: retrying the io-daemon (%s)", install.install_id, old.failure)
        install.supervisor = Supervisor(
            self._nursery, install.control, command=old.command, token=old.token, port=old.port
        )

    def _update_refreshed(self, record: HostRecord) -> list[DownloadRoot]:
        """Merge our record; the roots come back with fresh stat fields (thread)."""
        return rootstat.refresh_all(self.store.update(record))

    def _last_install_id(self) -> str | None:
        if self.installs:
            return max(self.installs.values(), key=lambda i: i.last_used).install_id
        known = [p for p in self.store.read().profiles if p.install_id]
        if not known:
            return None
        return max(known, key=lambda p: p.last_used).install_id

    async def _install(self, install_id: str) -> Install:
        async with self._installs_lock:
            install = self.installs.get(install_id)
            if install is not None:
                return install
            control = await open_control_listener()
            assert control.directory is not None  # Unix: service mode needs Unix sockets
            link_path = control.directory / "service"
            link_listener = await _unix_listener(link_path)
            command = [*daemon_command(), "--service-link", f"unix:{link_path}"]
            if self.daemon_idle_exit is not None:
                command += ["--idle-exit", f"{self.daemon_idle_exit:g}"]
            record = HostRecord(
                pid=os.getpid(),
                port=self.link_port,
                token=self.link_token,
                started=int(time.time()),
                browser=Browser(name="Unknown", binary=""),
                install_id=install_id,
                link_address=self.link_address,
            )
            install = Install(
                install_id=install_id,
                supervisor=Supervisor(self._nursery, control, command=command),
                control=control,
                link_listener=link_listener,
                link_address=f"unix:{link_path}",
                record=record,
            )
            self.installs[install_id] = install
            self._nursery.start_soon(self._accept_links, install)
            self._nursery.start_soon(self._deliver_events, install)
            self._nursery.start_soon(self._watch_roots, install)
            log.info("install %s: first endpoint request", install_id)
            return install

    # -- roots ----------------------------------------------------------------------------

    async def _push_roots(self, install: Install) -> list[dict[str, Any]]:
        """Tell the daemon the roots if they (or an ``available`` flag) changed."""
        current = [rootstat.control_root(r) for r in install.roots]
        if current != install.pushed and install.peer is not None:
            try:
                await install.peer.notify("roots_changed", roots=current)
                install.pushed = current
            except ChannelError as exc:
                log.info("could not push roots to the daemon: %s", exc)
        return current

    async def _check_roots(self, install: Install) -> list[dict[str, Any]]:
        install.roots = await trio.to_thread.run_sync(
            lambda: [rootstat.refresh(r) for r in install.roots]
        )
        return await self._push_roots(install)

    async def _save_roots(self, install: Install, roots: list[DownloadRoot]) -> None:
        """Overwrite this install's roots on disk and in its daemon; holds ``install.lock``."""
        record = install.record
        record.roots = roots
        try:
            install.roots = await trio.to_thread.run_sync(self.store.update, record)
        finally:
            record.roots = None
        await install.supervisor.update_config(record.extension_id, install.roots)
        await self._push_roots(install)

    async def _watch_roots(self, install: Install) -> None:
        while True:
            if install.clients <= 0:
                await install.wait_changed()
                continue
            await trio.sleep(ROOT_CHECK)
            if install.clients > 0:
                await self._check_roots(install)

    # -- the daemon's channel ---------------------------------------------------------------

    async def _accept_links(self, install: Install) -> None:
        async def serve(stream: trio.SocketStream) -> None:
            authed = trio.Event()
            box: list[Peer] = []
            peer = Peer(
                stream,
                functools.partial(self._daemon_request, install, authed),
                functools.partial(self._daemon_notice, install, authed, box),
            )
            box.append(peer)

            async def require_hello() -> None:
                with trio.move_on_after(HELLO_TIMEOUT):
                    await authed.wait()
                if not authed.is_set():
                    await trio.aclose_forcefully(stream)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(require_hello)
                await peer.run()
                nursery.cancel_scope.cancel()
            if install.peer is peer:
                install.peer = None
                install.clients = 0
                install.changed()

        await trio.serve_listeners(serve, [install.link_listener])

    async def _daemon_notice(
        self, install: Install, authed: trio.Event, box: list[Peer], message: dict[str, Any]
    ) -> None:
        op = message.get("op")
        if op == "hello":
            if message.get("auth") != install.supervisor.token:
                log.warning(
                    "install %s: a service link without the daemon token", install.install_id
                )
                return
            # The newest daemon's channel wins; a crashed daemon's one is finished anyway.
            install.peer = box[0]
            install.pushed = None  # a new daemon knows no roots yet
            authed.set()
            install.changed()
            return
        if not authed.is_set():
            return
        if op == "clients":
            count = message.get("count")
            if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
                install.clients = count
                install.changed()

    async def _daemon_request(
        self, install: Install, authed: trio.Event, message: dict[str, Any]
    ) -> Reply:
        if not authed.is_set():
            return 403, "say hello first"
        match message.get("op"):
            case "roots":
                return 200, await self._check_roots(install)
            case "delete_root":
                return await self._delete_root(install, message.get("key"))
            case "open":
                return await self._open(install, message)
            case "pick":
                return await self._pick(install)
            case other:
                return 400, f"unknown request {other!r}"

    async def _delete_root(self, install: Install, key: Any) -> Reply:
        if not isinstance(key, str):
            return 400, "'key' must be a string"
        async with install.lock:
            remaining = [r for r in install.roots if r.key != key]
            if len(remaining) == len(install.roots):
                return 404, f"Root not found: {key}"
            try:
                await self._save_roots(install, remaining)
            except StoreError as exc:
                return 500, f"Failed to save download roots: {exc}"
        log.info("install %s: download root removed: %s", install.install_id, key)
        return 200, {"removed": key}

    async def _open(self, install: Install, message: dict[str, Any]) -> Reply:
        root_key, path, reveal = message.get("root_key"), message.get("path"), message.get("reveal")
        if (
            not isinstance(root_key, str)
            or not isinstance(path, str)
            or not isinstance(reveal, bool)
        ):
            return 400, "expected {root_key: string, path: string, reveal: bool}"
        root = next((r for r in install.roots if r.key == root_key), None)
        if root is None:
            return 404, f"Root not found: {root_key}"
        try:
            target = await trio.to_thread.run_sync(contained_target, root.path, path)
        except ContainmentError as exc:
            return 403, str(exc)
        try:
            await desktop.open_path(target, reveal, self._nursery)
        except desktop.DesktopError as exc:
            return 502, str(exc)
        return 200, None

    async def _pick(self, install: Install) -> Reply:
        if install.picking:
            return 409, "A folder dialog is already open"
        install.picking = True
        try:
            try:
                chosen = await desktop.pick_folder(initial_directory(install.roots))
            except desktop.DesktopError as exc:
                return 502, str(exc)
            if chosen is None:
                return 204, None
            root = build_root(chosen)
            async with install.lock:
                roots = list(install.roots)
                if not any(r.path == root.path for r in roots):
                    roots.append(root)
                try:
                    await self._save_roots(install, roots)
                except StoreError as exc:
                    return 500, f"Failed to save download root: {exc}"
            log.info("install %s: download root added: %s", install.install_id, root.path)
            return 200, root_json(root)
        finally:
            install.picking = False

    # -- events ---------------------------------------------------------------------------

    async def _link_event(self, event: dict[str, Any]) -> None:
        await trio.lowlevel.checkpoint()
        if not self.installs:
            self.orphans.add(event)
            log.info("kept a %s event until an install asks for its endpoint", event.get("event"))
            return
        install = max(self.installs.values(), key=lambda i: i.last_used)
        install.events.add(event)
        install.changed()

    def _adopt_orphans(self, install: Install) -> None:
        self.orphans.prune()
        while self.orphans.items:
            stamp, event = self.orphans.items.popleft()
            install.events.add(event, stamp)
        install.changed()

    async def _deliver_events(self, install: Install) -> None:
        while True:
            install.events.prune()
            peer = install.peer
            if not install.events.items or install.clients <= 0 or peer is None:
                await install.wait_changed(EVENT_TTL)
                continue
            stamp, event = install.events.items.popleft()
            try:
                _status, body = await peer.request(
                    "event", within=EVENT_HANDOFF_TIMEOUT, event=event
                )
                delivered = body.get("delivered", 0) if isinstance(body, dict) else 0
            except ChannelError:
                delivered = 0
            if not delivered:
                install.events.items.appendleft((stamp, event))
                await install.wait_changed(1.0)  # a stale client count: wait for news


async def _unix_listener(path: Path) -> trio.SocketListener:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return trio.SocketListener(sock)


async def bind_service_socket(path: Path) -> trio.SocketListener:
    """A Unix socket of ours, 0600; a stale one (a killed service's) is unlinked first:
    the caller holds service.lock, so no live service owns it."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return await _unix_listener(path)
