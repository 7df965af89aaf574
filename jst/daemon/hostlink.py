"""The daemon's end of the host control channel (protocol: ``jst/control.py``).

Only used when the native-host started us with ``--host-control``. Two phases:

1. Before serving (``await_first_config``, plain blocking sockets, called by ``cli.main``
   before trio runs): connect, say ``ready`` with our port, and wait for the host's
   first ``config``. The host starts us before the browser's handshake has named the
   profile (issue 17: our imports overlap the host's), so until that config arrives we
   know neither our roots nor our install id, and we do not serve: connections wait in
   the listening socket's backlog. The connection and any bytes already read are left
   here for phase 2.
2. Serving (``run_host_link``, a task of the daemon's nursery): apply every further
   ``config`` the host pushes (roots, extension id, install id) and acknowledge it. The
   channel is also a lifeline: when it closes, the host is gone or has given up on us,
   and we shut down at once, without waiting for the parent-pid check.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable

import trio

from jst import control
from jst.control_stream import ControlStream, connect
from jst.daemon.state import DaemonState

log = logging.getLogger("jst.daemon.hostlink")

CONNECT_TIMEOUT = 5.0
RECEIVE_SIZE = 64 * 1024
# How often the blocking wait for the first config looks up from the socket to check
# for a signal (SIGTERM before trio runs must still mean "exit 0 now").
WAIT_SLICE = 0.1


class HostLinkLost(Exception):
    """The control channel could not be opened or broke; the daemon must exit."""


class _Opened:
    """Phase 1's connection and undecoded bytes, handed to phase 2 (same process)."""

    def __init__(self, sock: socket.socket, decoder: control.LineDecoder) -> None:
        self.sock = sock
        self.decoder = decoder


_opened: dict[str, _Opened] = {}


def _blocking_connect(address: str) -> socket.socket:
    kind, _, rest = address.partition(":")
    if kind == "unix" and hasattr(socket, "AF_UNIX"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: str | tuple[str, int] = rest
    elif kind == "tcp":
        host, _, port = rest.rpartition(":")
        if host not in ("127.0.0.1", "::1"):
            raise ValueError(f"control address must be loopback, got {host!r}")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        target = (host, int(port))
    else:
        raise ValueError(f"unknown control address {address!r} (expected unix:… or tcp:…)")
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        sock.connect(target)
    except BaseException:
        sock.close()
        raise
    return sock


def _apply(message: control.Config, state: DaemonState) -> None:
    state.roots = dict(message.roots)
    state.extension_id = message.extension_id
    if message.install_id is not None:
        state.install_id = message.install_id
    log.info("host pushed %d download root(s)", len(message.roots))


def await_first_config(
    address: str, state: DaemonState, port: int, should_stop: Callable[[], bool]
) -> bool:
    """Phase 1. True once the first config is in effect; False if we must exit quietly
    (``should_stop`` became true: a signal, or the host closed the channel first).
    Raises ``HostLinkLost`` when the host cannot be reached or breaks the protocol."""
    try:
        sock = _blocking_connect(address)
    except (OSError, ValueError) as exc:
        raise HostLinkLost(f"cannot reach the host at {address}: {exc}") from exc
    decoder = control.LineDecoder()
    try:
        sock.sendall(control.encode(control.Ready(os.getpid(), port, state.token.decode())))
        sock.settimeout(WAIT_SLICE)
        while True:
            message = decoder.next_message()
            if message is None:
                if should_stop():
                    sock.close()
                    return False
                try:
                    data = sock.recv(RECEIVE_SIZE)
                except TimeoutError:
                    continue
                if not data:
                    log.info("host control channel closed before the first config")
                    sock.close()
                    return False
                decoder.receive_data(data)
                continue
            if isinstance(message, control.Config):
                _apply(message, state)
                sock.settimeout(None)
                sock.sendall(control.encode(control.Applied(message.seq)))
                break
            if isinstance(message, control.Error):
                raise control.ControlError(f"host reported an error: {message.message}")
            raise control.ControlError(f"unexpected message from the host: {message!r}")
    except (OSError, control.ControlError) as exc:
        sock.close()
        raise HostLinkLost(f"host control channel failed before serving: {exc}") from exc
    _opened[address] = _Opened(sock, decoder)
    return True


async def _open(address: str) -> ControlStream:
    opened = _opened.pop(address, None)
    if opened is None:
        with trio.fail_after(CONNECT_TIMEOUT):
            return await connect(address)
    opened.sock.setblocking(False)
    stream = ControlStream(trio.SocketStream(trio.socket.from_stdlib_socket(opened.sock)))
    stream.adopt_decoder(opened.decoder)
    return stream


async def run_host_link(
    address: str, state: DaemonState, port: int, stopping: trio.Event, reason: list[str]
) -> None:
    """Serve the channel until it closes (returns) or ``stopping`` is set (says why)."""
    adopted = address in _opened
    try:
        channel = await _open(address)
    except (OSError, ValueError, trio.TooSlowError) as exc:
        raise HostLinkLost(f"cannot reach the host at {address}: {exc}") from exc
    try:
        if not adopted:
            await channel.send(control.Ready(os.getpid(), port, state.token.decode("utf-8")))
        async with trio.open_nursery() as nursery:

            async def announce_stop() -> None:
                await stopping.wait()
                await channel.send(control.Stopping(reason[0] if reason else "shutting down"))

            nursery.start_soon(announce_stop)
            await _apply_configs(channel, state)
            nursery.cancel_scope.cancel()
    # except*: raised inside the nursery, these reach us wrapped in an exception group
    except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as group:
        log.info("host control channel broke: %s", group.exceptions[0])
    except* control.ControlError as group:
        log.error("host sent an invalid control message: %s", group.exceptions[0])
    finally:
        await trio.aclose_forcefully(channel.stream)


async def _apply_configs(channel: ControlStream, state: DaemonState) -> None:
    while True:
        message = await channel.receive()
        match message:
            case None:
                log.info("host control channel closed")
                return
            case control.Config():
                _apply(message, state)
                await channel.send(control.Applied(message.seq))
            case control.Error(text):
                log.error("host reported a control error: %s", text)
                return
            case _:
                raise control.ControlError(f"unexpected message from the host: {message!r}")
