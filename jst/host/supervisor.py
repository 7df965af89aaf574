"""The io-daemon as a supervised child of the host (§4.1, with §9.19–9.22 fixed).

Lifecycle (``DaemonState``, every transition logged)::

    STOPPED --first handshake--> STARTING --ready on the control channel--> RUNNING
    RUNNING --child exits / channel breaks--> STARTING (restart, same port and token)
    RUNNING --child says "stopping" (POST /control/shutdown, signal)--> STOPPED
    any     --host exits--> STOPPING --child reaped--> STOPPED
    STARTING --too many failures--> STOPPED with ``failure`` set (handshakes answer it)

Design notes
------------
* The child is spawned with stdin from the null device (§9.20: Chrome's pipe is ours
  alone), stdout to the null device (the port comes over the control channel), stderr
  inherited (Chrome's log). Its token travels in its environment, never on argv (§9.19).
* Readiness is bounded (``READY_TIMEOUT``, §9.21): a child that has not said ``ready``
  by then is killed and counts as a failed start.
* A crash is restarted on the same port and with the same token, so the extension's
  5-second ``/health`` poll keeps passing and only its WebSocket reconnects (§9.22).
  On Unix the host binds the listening socket once and hands it to every daemon it
  starts (``--listen-fd``): while one daemon is replaced, connections wait in the
  socket's backlog instead of being refused, and no other program can take the port.
  (Windows cannot pass sockets this way; there the daemon re-binds ``--port``.)
  The first restart is immediate; then the delay doubles. ``MAX_FAILURES`` failures
  within ``FAILURE_WINDOW`` seconds is a crash loop: we give up, and the next handshake
  answers ``ok:false`` with the reason instead of a dead port.
* A daemon that stops on purpose (a client's ``POST /control/shutdown``) is not
  restarted behind the client's back; the next handshake starts it again (§9.22).
* Parent death: the child watches our pid (``--parent-pid``, a pidfd on Linux) and our
  end of the control channel; either ends it within a second of our death, SIGKILL
  included. When we exit normally we close the channel, then SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import enum
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import attrs
import trio

from jst import config, control
from jst.control_stream import ControlStream
from jst.host.control_server import ControlListener
from jst.rpcinfo import DownloadRoot

log = logging.getLogger("jst.host.daemon")

DAEMON_ENV = "JST_IO_DAEMON"  # a test (or a packager) may name the daemon executable
TOKEN_ENV = "JST_IO_DAEMON_TOKEN"  # noqa: S105 (a variable name)
DEV_ORIGINS_ENV = "JSTORRENT_DEV_ORIGINS"

# Python starts the daemon in ~0.3 s; 8 s leaves the handshake room inside the
# extension's 10 s wait for DaemonInfo even on a loaded machine.
READY_TIMEOUT = 8.0
# How long a pushed config may take to be acknowledged before we stop waiting (the
# reply to the extension does not wait longer than this for a stuck daemon).
APPLY_TIMEOUT = 2.0
# Restarts: immediate, then 0.25, 0.5, 1, 2 s... Five failures within a minute is a
# crash loop, not bad luck.
FIRST_BACKOFF = 0.25
MAX_BACKOFF = 2.0
MAX_FAILURES = 5
FAILURE_WINDOW = 60.0
# A daemon that ran this long before dying was healthy: its restart is immediate again.
HEALTHY_RUN = 10.0
# On host exit: time for the daemon to finish after its channel closed and SIGTERM,
# before SIGKILL. Keeps "host gone -> daemon gone" well within 1 s.
STOP_GRACE = 0.4
LISTEN_BACKLOG = 1024  # as the daemon's own (browsers open bursts of connections)


class DaemonState(enum.Enum):
    STOPPED = "STOPPED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"


class DaemonUnavailable(Exception):
    """No daemon can be offered; the message is the handshake's error text."""


class StartFailed(Exception):
    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent  # retrying cannot help (no executable)


def daemon_command() -> list[str]:
    """How to run the io-daemon: ``$JST_IO_DAEMON``, else next to us, else ``python -m``."""
    override = os.environ.get(DAEMON_ENV)
    if override:
        return [override]
    here = Path(sys.argv[0]).resolve().parent
    suffix = ".exe" if sys.platform == "win32" else ""
    for name in ("jst-io-daemon", "jstorrent-io-daemon"):
        candidate = here / f"{name}{suffix}"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return [str(candidate)]
    return [sys.executable, "-m", "jst.daemon.cli"]


@attrs.define
class Supervisor:
    nursery: trio.Nursery
    listener: ControlListener
    command: Sequence[str] = attrs.field(factory=daemon_command)
    token: str = attrs.field(factory=lambda: str(uuid.uuid4()))
    state: DaemonState = DaemonState.STOPPED
    port: int | None = None
    install_id: str | None = None
    failure: str | None = None
    # The latest (extension id, roots); pushed on every (re)start and change.
    extension_id: str | None = None
    roots: dict[str, str] = attrs.field(factory=dict)
    _settled: trio.Event = attrs.field(factory=trio.Event)  # RUNNING, or gave up
    _channel: ControlStream | None = None
    _seq: int = 0
    _applied: dict[int, trio.Event] = attrs.field(factory=dict)
    _running_task: bool = False
    _daemon_socket: socket.socket | None = attrs.field(default=None, init=False)  # Unix: its port

    def _listening_socket(self) -> socket.socket | None:
        if sys.platform == "win32":
            return None
        if self._daemon_socket is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", self.port or 0))  # the old port, after a stop
            except OSError:
                sock.bind(("127.0.0.1", 0))
            sock.listen(LISTEN_BACKLOG)
            sock.set_inheritable(False)  # passed to our daemon only, via pass_fds
            self._daemon_socket = sock
            self.port = sock.getsockname()[1]
        return self._daemon_socket

    def close(self) -> None:
        """Release the port: with no daemon to come, clients must be refused, not queued."""
        if self._daemon_socket is not None:
            self._daemon_socket.close()
            self._daemon_socket = None

    def _move(self, state: DaemonState, detail: str = "") -> None:
        if state is not self.state:
            log.info(
                "io-daemon %s -> %s%s",
                self.state.value,
                state.value,
                f" ({detail})" if detail else "",
            )
        self.state = state

    async def ensure_running(self, install_id: str) -> tuple[int, str]:
        """Start the daemon if needed and return its (port, token), or raise why not."""
        if self.failure is not None:
            raise DaemonUnavailable(self.failure)
        if not self._running_task:
            self.install_id = self.install_id or install_id
            self._running_task = True
            self._settled = trio.Event()
            self.nursery.start_soon(self._supervise)
        elif self.state is DaemonState.RUNNING:
            await self.push()
        with trio.move_on_after(READY_TIMEOUT):
            await self._settled.wait()
        if self.failure is not None:
            raise DaemonUnavailable(self.failure)
        if self.state is not DaemonState.RUNNING or self.port is None:
            raise DaemonUnavailable("Daemon not running")
        return self.port, self.token

    def configure(self, extension_id: str | None, roots: list[DownloadRoot]) -> None:
        """What the daemon is told on its next (re)start or ``push``."""
        self.extension_id = extension_id
        self.roots = {root.key: root.path for root in roots}

    async def update_config(self, extension_id: str | None, roots: list[DownloadRoot]) -> None:
        self.configure(extension_id, roots)
        await self.push()

    async def push(self) -> None:
        """Send the current config to a running daemon and wait (bounded) for its ack."""
        channel = self._channel
        if channel is None or self.state is not DaemonState.RUNNING:
            return
        self._seq += 1
        seq = self._seq
        done = self._applied[seq] = trio.Event()
        try:
            await channel.send(control.Config(seq, self.extension_id, self.roots))
            with trio.move_on_after(APPLY_TIMEOUT) as scope:
                await done.wait()
            if scope.cancelled_caught:
                log.warning("io-daemon did not acknowledge config %d in %g s", seq, APPLY_TIMEOUT)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.warning("could not push config to the io-daemon: %s", exc)
        finally:
            self._applied.pop(seq, None)

    async def _supervise(self) -> None:
        failures: deque[float] = deque()
        backoff = 0.0
        try:
            while True:
                if self._settled.is_set():
                    self._settled = trio.Event()
                self._move(DaemonState.STARTING, f"port {self.port or 'any'}")
                started = time.monotonic()
                try:
                    deliberate = await self._run_once()
                except StartFailed as exc:
                    outcome = str(exc)
                    if exc.permanent:
                        self._give_up(f"Failed to start daemon: {outcome}")
                        return
                else:
                    if deliberate is not None:
                        self._move(DaemonState.STOPPED, f"stopped on purpose: {deliberate}")
                        self.close()
                        self._running_task = False
                        self._settled.set()
                        return
                    outcome = "exited unexpectedly"
                now = time.monotonic()
                if now - started > HEALTHY_RUN:
                    backoff = 0.0
                failures.append(now)
                while failures and failures[0] < now - FAILURE_WINDOW:
                    failures.popleft()
                if len(failures) >= MAX_FAILURES:
                    self._give_up(
                        f"Failed to start daemon: it failed {len(failures)} times within "
                        f"{FAILURE_WINDOW:g} s (last: {outcome})"
                    )
                    return
                log.warning("io-daemon %s; restarting in %.2f s", outcome, backoff)
                await trio.sleep(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2 or FIRST_BACKOFF)
        finally:
            if self.state is not DaemonState.STOPPED:
                self._move(DaemonState.STOPPED, "host exiting")

    def _give_up(self, reason: str) -> None:
        self.close()
        self.failure = reason
        self._move(DaemonState.STOPPED, "giving up: " + reason)
        self._settled.set()

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env[TOKEN_ENV] = self.token
        dev_origins = config.env_setting("DEV_ORIGINS")
        if dev_origins is not None:
            env[DEV_ORIGINS_ENV] = dev_origins
        return env

    def _argv(self, listener: socket.socket | None) -> list[str]:
        where = ["--port", str(self.port or 0)]
        if listener is not None:
            where = ["--listen-fd", str(listener.fileno())]
        return [
            *self.command,
            *where,
            "--parent-pid", str(os.getpid()),
            "--install-id", self.install_id or "",
            "--host-control", self.listener.address,
        ]  # fmt: skip

    async def _run_once(self) -> str | None:
        """One daemon process, from spawn to exit. Returns the reason of a deliberate stop,
        ``None`` for a crash; raises ``StartFailed`` if it never became ready."""
        try:
            listener = self._listening_socket()
            proc = await trio.lowlevel.open_process(
                self._argv(listener),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=self._environment(),
                pass_fds=() if listener is None else (listener.fileno(),),
            )
        except OSError as exc:
            raise StartFailed(f"cannot run {self.command[0]}: {exc}", permanent=True) from exc
        channel: ControlStream | None = None
        try:
            channel = await self._wait_ready(proc)
            self._channel = channel
            self._move(DaemonState.RUNNING, f"pid {proc.pid}, port {self.port}")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._push_initial)
                deliberate = await self._serve_channel(channel, proc)
                nursery.cancel_scope.cancel()
            return deliberate
        finally:
            self._channel = None
            for event in self._applied.values():
                event.set()
            with trio.CancelScope(shield=True):
                await self._stop(proc, channel)

    async def _push_initial(self) -> None:
        await self.push()
        self._settled.set()

    async def _wait_ready(self, proc: trio.Process) -> ControlStream:
        """The child's authenticated control channel, once it says ``ready``."""
        ready: list[ControlStream] = []
        exited: list[int] = []
        with trio.move_on_after(READY_TIMEOUT):
            async with trio.open_nursery() as nursery:

                async def child_exit() -> None:
                    exited.append(await proc.wait())
                    nursery.cancel_scope.cancel()

                async def accept() -> None:
                    # Others cannot reach a 0700 directory, but on Windows (TCP) anyone
                    # local can connect: only the child knows the token.
                    while True:
                        channel = ControlStream(await self.listener.listener.accept())
                        try:
                            first = await channel.receive()
                        except (control.ControlError, trio.BrokenResourceError, OSError):
                            first = None
                        if isinstance(first, control.Ready) and first.auth == self.token:
                            self.port = first.port
                            ready.append(channel)
                            nursery.cancel_scope.cancel()
                            return
                        await trio.aclose_forcefully(channel.stream)

                nursery.start_soon(child_exit)
                nursery.start_soon(accept)
        if ready:
            return ready[0]
        if exited:
            raise StartFailed(f"io-daemon exited with status {exited[0]} before it was ready")
        raise StartFailed(f"io-daemon did not report ready within {READY_TIMEOUT:g} s")

    async def _serve_channel(self, channel: ControlStream, proc: trio.Process) -> str | None:
        deliberate: list[str] = []
        async with trio.open_nursery() as nursery:

            async def read() -> None:
                try:
                    while (message := await channel.receive()) is not None:
                        match message:
                            case control.Applied(seq):
                                if seq in self._applied:
                                    self._applied[seq].set()
                            case control.Stopping(reason):
                                deliberate.append(reason)
                            case control.Error(text):
                                log.error("io-daemon reported a control error: %s", text)
                            case _:
                                log.warning("unexpected control message %r", message)
                except (control.ControlError, trio.BrokenResourceError, OSError) as exc:
                    log.warning("io-daemon control channel broke: %s", exc)
                # The channel is gone: a daemon without it is exiting (or hung); either
                # way it is finished. Give it a moment to exit by itself.
                with trio.move_on_after(STOP_GRACE):
                    await proc.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(read)
            status = await proc.wait()
            log.info("io-daemon pid %d exited with status %s", proc.pid, status)
            nursery.cancel_scope.cancel()
        return deliberate[0] if deliberate else None

    async def _stop(self, proc: trio.Process, channel: ControlStream | None) -> None:
        if proc.returncode is None:
            self._move(DaemonState.STOPPING, f"pid {proc.pid}")
        if channel is not None:
            await trio.aclose_forcefully(channel.stream)
        if proc.returncode is None:
            proc.terminate()
            with trio.move_on_after(STOP_GRACE):
                await proc.wait()
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
