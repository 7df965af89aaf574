"""The io-daemon as a supervised child of the host (§4.1, with §9.19–9.22 fixed).

Lifecycle (``DaemonState``, every transition logged)::

    STOPPED --host start (Unix), first handshake--> STARTING --ready--> RUNNING
    RUNNING --child exits / channel breaks--> STARTING (restart, same port and token)
    RUNNING --child says "stopping" (POST /control/shutdown, signal)--> STOPPED
    any     --host exits--> STOPPING --child reaped--> STOPPED
    STARTING --too many failures--> STOPPED with ``failure`` set (handshakes answer it)

Design notes
------------
* The first child is started by the host before it imports trio (``launch.py``), long
  before the handshake; restarts are started here, the same way (``launch.spawn``).
  Its token travels through a pipe, never on argv (§9.19) or in its environment.
* It says ``ready`` at once but serves nothing until our first ``config`` (install
  id, roots, extension id), which we send when the handshake has configured us.
* The handshake does not wait for ``ready`` when it need not (issue 17): while the
  first child of a run is alive and has not failed, its port (bound by us) and token
  are already good, and connections wait in the backlog until it serves. Once a start
  has failed, handshakes wait for the outcome as before, so a daemon that cannot start
  is answered ``ok:false`` with the reason. A child that fails after such an early
  answer is restarted on the same port; if it never comes up we give up and close the
  port, so the extension's requests fail and it reconnects, and its next handshake
  gets the reason.
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
import errno
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Sequence
from functools import partial
from typing import Any

import attrs
import trio

from jst import control
from jst.control_stream import ControlStream
from jst.host import launch
from jst.host.control_server import ControlListener
from jst.rpcinfo import DownloadRoot

log = logging.getLogger("jst.host.daemon")

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
# Where a child cannot be waited for through a pidfd (not Linux), how often to look.
EXIT_POLL = 0.05


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


class DaemonProcess:
    """A child started by ``launch.spawn`` (before trio ran, or from a thread), awaited
    from trio: through a pidfd on Linux, by polling elsewhere."""

    def __init__(self, popen: launch.Child) -> None:
        self.popen = popen
        self.pid = popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    async def wait(self) -> int:
        pidfd_open = getattr(os, "pidfd_open", None)
        if self.popen.poll() is None and pidfd_open is not None:
            try:
                pidfd = pidfd_open(self.pid)
            except OSError as exc:
                if exc.errno not in (errno.ENOSYS, errno.EPERM, errno.EINVAL, errno.ESRCH):
                    raise
            else:
                try:
                    await trio.lowlevel.wait_readable(pidfd)
                finally:
                    os.close(pidfd)
        # Polling is the portable fallback; after a pidfd said "exited" it ends at once.
        while (status := self.popen.poll()) is None:  # noqa: ASYNC110
            await trio.sleep(EXIT_POLL)
        await trio.lowlevel.checkpoint()
        return status

    def terminate(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()


@attrs.define
class Supervisor:
    nursery: trio.Nursery
    listener: ControlListener
    command: Sequence[str] = attrs.field(factory=launch.daemon_command)
    token: str = attrs.field(factory=launch.new_token)
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
    # Set once a handshake has named the profile: only then may the daemon be configured.
    _configured: trio.Event = attrs.field(factory=trio.Event)
    _initial_pushed: bool = False  # the current child has had its first config
    _proc: DaemonProcess | None = None  # the current child
    _next: DaemonProcess | None = None  # started by the host before trio (launch.py)
    _next_error: OSError | None = None
    _failed_starts: int = 0  # in this run of _supervise

    @classmethod
    def adopt(
        cls, nursery: trio.Nursery, listener: ControlListener, pre: launch.Prelaunched
    ) -> Supervisor:
        """Supervise the daemon the host started before trio, from now on."""
        supervisor = cls(nursery, listener, command=pre.command, token=pre.token)
        supervisor._daemon_socket = launch.adopt_socket(pre.listener)
        supervisor.port = supervisor._daemon_socket.getsockname()[1]
        supervisor._next = None if pre.proc is None else DaemonProcess(pre.proc)
        supervisor._next_error = pre.error
        supervisor._start_supervising()
        return supervisor

    def _listening_socket(self) -> socket.socket | None:
        if not launch.CAN_PASS_FDS:
            return None
        if self._daemon_socket is None:
            self._daemon_socket = launch.bind_daemon_socket(self.port or 0)
            self.port = self._daemon_socket.getsockname()[1]
        return self._daemon_socket

    def describe(self) -> dict[str, Any] | None:
        """The running daemon as ``jst status`` sees it (pid, port, token), or None."""
        proc = self._proc
        if self.state is not DaemonState.RUNNING or proc is None or self.port is None:
            return None
        return {"pid": proc.pid, "port": self.port, "token": self.token}

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

    def _start_supervising(self) -> None:
        self._running_task = True
        self._settled = trio.Event()
        self._failed_starts = 0
        self.nursery.start_soon(self._supervise)

    def _may_answer_now(self) -> bool:
        return self.state is DaemonState.RUNNING or self._may_answer_early()

    def _may_answer_early(self) -> bool:
        """True while the port and token we would answer are sure to be served, unless
        the child fails later (see the module notes): the first child of this run is
        alive, has not failed, and listens on a socket we hold."""
        proc = self._proc or self._next
        return (
            self.state is DaemonState.STARTING
            and self._failed_starts == 0
            and self._daemon_socket is not None
            and proc is not None
            and proc.returncode is None
        )

    async def ensure_running(self, install_id: str) -> tuple[int, str]:
        """Start the daemon if needed and return its (port, token), or raise why not."""
        if self.failure is not None:
            raise DaemonUnavailable(self.failure)
        self.install_id = self.install_id or install_id
        self._configured.set()  # the daemon's first config may go now (_push_initial)
        if not self._running_task:
            self._start_supervising()
        elif self.state is DaemonState.RUNNING and self._initial_pushed:
            await self.push()
        if self._may_answer_now():
            assert self.port is not None
            return self.port, self.token
        with trio.move_on_after(READY_TIMEOUT):
            await self._settled.wait()
        if self.failure is not None:
            raise DaemonUnavailable(self.failure)
        if self.state is not DaemonState.RUNNING or self.port is None:
            raise DaemonUnavailable("Daemon not running")
        return self.port, self.token

    async def wait_settled(self) -> None:
        """Until the daemon serves with its first config, or we gave up on it."""
        while not self._settled.is_set():
            await self._settled.wait()  # a restart replaces the event: look again

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
        if not self._configured.is_set():
            return  # no handshake yet: the first config (_push_initial) will carry this
        self._seq += 1
        seq = self._seq
        done = self._applied[seq] = trio.Event()
        try:
            await channel.send(control.Config(seq, self.extension_id, self.roots, self.install_id))
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
                    self._failed_starts += 1
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
                    self._failed_starts += 1
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

    async def _spawn(self) -> DaemonProcess:
        if self._next is not None or self._next_error is not None:
            proc, error = self._next, self._next_error
            self._next = self._next_error = None
            if error is not None:
                raise error
            assert proc is not None
            return proc
        listener = self._listening_socket()
        popen = await trio.to_thread.run_sync(
            partial(
                launch.spawn,
                self.command,
                self.token,
                listener,
                self.port or 0,
                self.install_id or "",
                self.listener.address,
            )
        )
        return DaemonProcess(popen)

    async def _run_once(self) -> str | None:
        """One daemon process, from spawn to exit. Returns the reason of a deliberate stop,
        ``None`` for a crash; raises ``StartFailed`` if it never became ready."""
        try:
            proc = self._proc = await self._spawn()
        except OSError as exc:
            raise StartFailed(f"cannot run {self.command[0]}: {exc}", permanent=True) from exc
        self._initial_pushed = False
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
        # The daemon serves nothing before its first config, and that config must name
        # the handshake's profile: wait for the handshake (at once after a restart).
        await self._configured.wait()
        await self.push()
        self._initial_pushed = True
        self._settled.set()

    async def _wait_ready(self, proc: DaemonProcess) -> ControlStream:
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

    async def _serve_channel(self, channel: ControlStream, proc: DaemonProcess) -> str | None:
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

    async def _stop(self, proc: DaemonProcess, channel: ControlStream | None) -> None:
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
