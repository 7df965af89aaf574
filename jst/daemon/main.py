"""jst-io-daemon's nursery tree: the whole process lifetime in one place.

    trio.run(serve_until_shutdown)
    └── root nursery ................ cancelled when the HTTP server has finished
        ├── http_server ............. server.serve on the bound socket: an accept loop and
        │                             a nursery of connections (HTTP requests, /io
        │                             sessions); returns after the graceful stop
        ├── watch_parent ............ only with --parent-pid: parent gone -> Shutdown(0),
        │                             liveness uncheckable -> Shutdown(1)
        ├── host_link ............... only with --host-control: the native-host's control
        │                             channel (config pushes); closed -> Shutdown(0),
        │                             unreachable -> Shutdown(1)
        └── watch_signals ........... SIGINT / SIGTERM -> Shutdown(0)
    (POST /control/shutdown -> Shutdown(0), after its 200 has been sent)

What may cancel what: nothing cancels the server directly; every trigger goes through
``Shutdown.request``, which sets the event the server waits on. The server then stops
accepting and gives open connections ``GRACEFUL_SECONDS`` before cancelling them. When
it returns, the root scope is cancelled, which ends the watchers. A worker thread stuck
in a system call (a dead network mount) cannot be cancelled, so ``Shutdown`` also arms
a timer that ends the process after ``HARD_LIMIT_SECONDS`` whatever is still running.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

import trio

from jst.daemon.gctune import configure_gc
from jst.daemon.parent import ParentCheckError, wait_for_exit
from jst.daemon.state import DaemonState
from jst.fdlimit import raise_open_file_limit

log = logging.getLogger("jst.daemon")

# SIGTERM/SIGINT must end the daemon within 2 s (issue #2); connections get 1 s to finish
# what they are doing, and the hard limit stays under 2 s even if a thread is stuck.
GRACEFUL_SECONDS = 1.0
HARD_LIMIT_SECONDS = 1.8
# Long enough for a browser that keeps a connection for its next request; the 5 s
# default of many servers makes the extension reconnect needlessly.
KEEP_ALIVE_SECONDS = 75.0
MAX_WS_MESSAGE = 64 * 1024 * 1024  # §6.1


class Shutdown:
    """The one way to end the process: records the exit status, wakes the server."""

    def __init__(self) -> None:
        self.event = trio.Event()
        self.exit_code = 0
        self.reason: list[str] = []  # filled once, read by host_link

    def request(self, exit_code: int = 0, reason: str = "") -> None:
        if self.event.is_set():
            return
        log.info("shutting down (%s)", reason or "requested")
        self.exit_code = exit_code
        self.reason.append(reason or "requested")
        self.event.set()
        timer = threading.Timer(HARD_LIMIT_SECONDS, os._exit, (exit_code,))
        timer.daemon = True
        timer.start()


async def http_server(
    state: DaemonState, listen_fd: int, shutdown: Shutdown, idle_exit: float | None = None
) -> None:
    from jst.daemon.server import Server, serve

    server = Server(
        state,
        request_shutdown=lambda: shutdown.request(0, "POST /control/shutdown"),
        keep_alive_seconds=KEEP_ALIVE_SECONDS,
        max_ws_message=MAX_WS_MESSAGE,
    )
    async with trio.open_nursery() as nursery:
        if idle_exit is not None:
            from jst.daemon.idle import watch_idle

            nursery.start_soon(watch_idle, server, idle_exit, shutdown.request)
        await serve(server, listen_fd, shutdown.event, GRACEFUL_SECONDS)
        nursery.cancel_scope.cancel()


async def watch_parent(pid: int, shutdown: Shutdown) -> None:
    try:
        await wait_for_exit(pid)
    except ParentCheckError as exc:
        log.error("cannot check parent process %d: %s", pid, exc)
        shutdown.request(1, "parent process cannot be checked")
        return
    shutdown.request(0, f"parent process {pid} is gone")


async def watch_signals(shutdown: Shutdown, early_signals: list[int]) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        if early_signals:  # arrived before this receiver existed (see cli.main)
            shutdown.request(0, signal.Signals(early_signals[0]).name)
        async for signum in signals:
            shutdown.request(0, signal.Signals(signum).name)


async def host_link(address: str, state: DaemonState, port: int, shutdown: Shutdown) -> None:
    from jst.daemon.hostlink import HostLinkLost, run_host_link

    try:
        await run_host_link(address, state, port, shutdown.event, shutdown.reason)
    except HostLinkLost as exc:
        log.error("%s", exc)
        shutdown.request(1, "host control channel unreachable")
        return
    shutdown.request(0, "host control channel closed")


def start_service_link(address: str, state: DaemonState, nursery: trio.Nursery) -> None:
    """Register the service-mode routes now (before any request), then run the channel."""
    from jst.daemon.control_ws import enable

    link = enable(address, state.token.decode("utf-8"))

    async def run_link() -> None:
        try:
            await link.run()
        except (OSError, ValueError, trio.TooSlowError) as exc:
            log.error("cannot reach the jst service at %s: %s", address, exc)

    nursery.start_soon(run_link)


def run(
    state: DaemonState,
    listen_fd: int,
    port: int,
    parent_pid: int | None,
    host_control: str | None,
    early_signals: list[int],
    service_link: str | None = None,
    idle_exit: float | None = None,
) -> int:
    """Serve until shut down; returns the process exit status."""
    shutdown = Shutdown()
    raise_open_file_limit()

    async def serve_until_shutdown() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_signals, shutdown, early_signals)
            if parent_pid is not None:
                nursery.start_soon(watch_parent, parent_pid, shutdown)
            if host_control is not None:
                nursery.start_soon(host_link, host_control, state, port, shutdown)
            if service_link is not None:
                start_service_link(service_link, state, nursery)
            await http_server(state, listen_fd, shutdown, idle_exit)
            nursery.cancel_scope.cancel()

    configure_gc()
    trio.run(serve_until_shutdown)
    return shutdown.exit_code
