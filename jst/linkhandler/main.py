"""The link-handler's flow, as one trio task tree (it is sequential by nature):

trio.run(hand_over)
└── hand_over ........ find a host -> deliver
                       or: launch the browser -> poll for a host (200 ms, 10 s)
                           -> deliver
(every wait is bounded: 1 s per health check, 10 s for a host, 30 s to deliver)
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import trio

from jst import config
from jst.linkhandler import hosts, launch
from jst.linkhandler.target import LinkError, Magnet, TorrentFile

log = logging.getLogger("jst.linkhandler")

POLL_INTERVAL = 0.2  # §7.3
HOST_WAIT = 10.0


async def wait_for_host(rpc_info: Path, seconds: float = HOST_WAIT) -> hosts.HostAddress:
    with trio.move_on_after(seconds):
        while True:
            host = await hosts.find_host(rpc_info)
            if host is not None:
                return host
            await trio.sleep(POLL_INTERVAL)
    raise LinkError("Timed out waiting for native host to start")


async def hand_over(
    item: Magnet | TorrentFile,
    exe_dir: Path | None,
    *,
    launch_browser: bool = True,
    wait: float = HOST_WAIT,
) -> hosts.HostAddress:
    """Deliver ``item``; the host that took it. With no host running: open the browser
    (unless ``launch_browser`` is false, as for ``jst add``) and wait up to ``wait`` s."""
    rpc_info = config.rpc_info_path()
    host = await hosts.find_host(rpc_info)
    if host is None:
        if launch_browser:
            base = config.env_setting("LAUNCH_URL", exe_dir) or launch.DEFAULT_LAUNCH_URL
            url = launch.launch_url(base, item)
            log.info("no host running; opening %s", base)
            launch.open_browser(url, launch.recorded_browser(rpc_info))
        elif wait <= 0:
            raise LinkError("No JSTorrent host is running")
        host = await wait_for_host(rpc_info, wait)
    # A host can vanish between its health check and our request (a browser restart).
    # If nothing was sent yet, wait for the next host; once the request is out, never
    # send it again: the host may have taken it, and a link must arrive at most once.
    deadline = trio.current_time() + HOST_WAIT
    while True:
        try:
            await hosts.deliver(host, item)
            return host
        except hosts.HostUnreachable as exc:
            remaining = deadline - trio.current_time()
            if remaining <= 0:
                raise
            log.info("%s; waiting for another host", exc)
            host = await wait_for_host(rpc_info, remaining)


async def run(item: Magnet | TorrentFile, exe_dir: Path | None) -> bool:
    """Hand ``item`` over; False if a signal ended the attempt. ``LinkError`` on failure."""
    interrupted = False
    failure: list[LinkError] = []
    async with trio.open_nursery() as nursery:

        async def watch_signals() -> None:
            nonlocal interrupted
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    log.info("stopped by %s", signal.Signals(signum).name)
                    interrupted = True
                    nursery.cancel_scope.cancel()

        async def attempt() -> None:
            try:
                await hand_over(item, exe_dir)
            except LinkError as exc:  # carried out of the nursery unwrapped
                failure.append(exc)
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch_signals)
        nursery.start_soon(attempt)
    if failure:
        raise failure[0]
    return not interrupted
