"""The daemon's end of the host control channel (protocol: ``jst/control.py``).

Only used when the native-host started us with ``--host-control``. We connect, say
``ready`` with our port, then apply every ``config`` the host pushes (roots and
extension id) and acknowledge it. The channel is also a lifeline: when it closes, the
host is gone or has given up on us, and we shut down at once, without waiting for the
parent-pid check.
"""

from __future__ import annotations

import logging
import os

import trio

from jst import control
from jst.control_stream import ControlStream, connect
from jst.daemon.state import DaemonState

log = logging.getLogger("jst.daemon.hostlink")

CONNECT_TIMEOUT = 5.0


class HostLinkLost(Exception):
    """The control channel could not be opened or broke; the daemon must exit."""


async def run_host_link(
    address: str, state: DaemonState, port: int, stopping: trio.Event, reason: list[str]
) -> None:
    """Serve the channel until it closes (returns) or ``stopping`` is set (says why)."""
    try:
        with trio.fail_after(CONNECT_TIMEOUT):
            channel = await connect(address)
    except (OSError, ValueError, trio.TooSlowError) as exc:
        raise HostLinkLost(f"cannot reach the host at {address}: {exc}") from exc
    try:
        await channel.send(control.Ready(os.getpid(), port, state.token.decode("utf-8")))
        async with trio.open_nursery() as nursery:

            async def announce_stop() -> None:
                await stopping.wait()
                await channel.send(control.Stopping(reason[0] if reason else "shutting down"))

            nursery.start_soon(announce_stop)
            await _apply_configs(channel, state)
            nursery.cancel_scope.cancel()
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        log.info("host control channel broke: %s", exc)
    except control.ControlError as exc:
        log.error("host sent an invalid control message: %s", exc)
    finally:
        await trio.aclose_forcefully(channel.stream)


async def _apply_configs(channel: ControlStream, state: DaemonState) -> None:
    while True:
        message = await channel.receive()
        match message:
            case None:
                log.info("host control channel closed")
                return
            case control.Config(seq, extension_id, roots):
                state.roots = dict(roots)
                state.extension_id = extension_id
                log.info("host pushed %d download root(s)", len(roots))
                await channel.send(control.Applied(seq))
            case control.Error(text):
                log.error("host reported a control error: %s", text)
                return
            case _:
                raise control.ControlError(f"unexpected message from the host: {message!r}")
