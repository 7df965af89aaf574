"""``jst add``: hand links to the running JSTorrent, and say where each one went.

The checks and the delivery are the link-handler's own (``jst.linkhandler``): the same
validation (a magnet needs an info hash; a file must exist and be a small torrent), the
same choice of host and the same at-most-once delivery. What differs is for people at
a terminal and for scripts: nothing is opened unless ``--launch`` is given, a host is
waited for only with ``--wait``, and each link gets one line saying where it went or
why not. ``jst rpc`` uses the same functions.
"""

from __future__ import annotations

import base64
import binascii
import sys
from pathlib import Path
from typing import Any

import attrs
import trio

from jst import config
from jst.linkhandler import hosts
from jst.linkhandler.main import hand_over
from jst.linkhandler.target import (
    MAX_TORRENT_BYTES,
    TOO_LARGE,
    LinkError,
    Magnet,
    TorrentFile,
    looks_like_torrent,
    parse_target,
)
from jst.rpcinfo import RpcInfoError, parse_rpc_info

Item = Magnet | TorrentFile
# Where our scripts are: an env file there may set LAUNCH_URL, as for the link-handler.
EXE_DIR = Path(sys.argv[0]).resolve().parent


@attrs.frozen
class Delivery:
    """Where one link went (``host_pid``) or why not (``reason``)."""

    link: str
    reason: str | None = None
    host_pid: int | None = None
    browser: str | None = None
    via: str | None = None  # "unix" (a jst host's private socket) or "tcp"

    @property
    def delivered(self) -> bool:
        return self.reason is None

    def describe(self) -> str:
        if self.reason is not None:
            return f"not delivered: {self.link}\n  reason: {self.reason}"
        return f"delivered to {self.browser or 'JSTorrent'} (pid {self.host_pid}): {self.link}"

    def to_json(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "host_pid": self.host_pid,
            "browser": self.browser,
            "via": self.via,
        }


def magnet(link: str) -> Magnet:
    """``link`` as a magnet, or ``LinkError`` (a path or a web address is not one)."""
    if not link.lower().startswith("magnet:"):
        raise LinkError(f"Not a magnet link (it must start with 'magnet:?'): {link[:200]}")
    item = parse_target(link)
    assert isinstance(item, Magnet)
    return item


def torrent_file(path: str) -> TorrentFile:
    """A ``.torrent`` path or ``file://`` URL, checked as the link-handler checks it."""
    if path.lower().startswith("magnet:"):
        raise LinkError("This is a magnet link, not a torrent file")
    item = parse_target(path)
    assert isinstance(item, TorrentFile)
    return item


def torrent_contents(contents_base64: str, name: str) -> TorrentFile:
    """A torrent given by its bytes (base64), with the same checks as a file's."""
    if len(contents_base64) > MAX_TORRENT_BYTES // 3 * 4 + 4:
        raise LinkError(TOO_LARGE)
    try:
        data = base64.b64decode(contents_base64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise LinkError(f"contents_base64 is not valid base64: {exc}") from exc
    if len(data) > MAX_TORRENT_BYTES:
        raise LinkError(TOO_LARGE)
    if not looks_like_torrent(data):
        raise LinkError(f"Not a torrent file: {name}")
    return TorrentFile(path=name, name=name, contents_base64=base64.b64encode(data).decode())


def browser_of(pid: int) -> str | None:
    """The browser name the host ``pid`` recorded in ``rpc-info.json``."""
    try:
        info = parse_rpc_info(config.rpc_info_path().read_bytes())
    except (OSError, RpcInfoError):
        return None
    for profile in info.profiles:
        if profile.pid == pid:
            return profile.browser.name or None
    return None


async def deliver(item: Item, shown: str, *, wait: float = 0.0, launch: bool = False) -> Delivery:
    """Hand ``item`` to a running host (waiting up to ``wait`` s for one; opening the
    browser first only if ``launch``). Never raises ``LinkError``: it becomes ``reason``."""
    try:
        exe_dir = EXE_DIR
        host: hosts.HostAddress = await hand_over(item, exe_dir, launch_browser=launch, wait=wait)
    except LinkError as exc:
        return Delivery(shown, reason=str(exc))
    kind = host.address.partition(":")[0]
    return Delivery(shown, host_pid=host.pid, browser=browser_of(host.pid), via=kind)


async def add_targets(targets: list[str], *, wait: float, launch: bool) -> list[Delivery]:
    """``jst add``: each target in turn (a bad one does not stop the others)."""
    results: list[Delivery] = []
    for target in targets:
        try:
            scheme, sep, _ = target.partition("://")
            if sep and scheme.isalpha() and scheme.lower() != "file":  # http://, ftp://, ...
                raise LinkError("Not a magnet link, a .torrent file or a file:// URL")
            item = parse_target(target)
        except LinkError as exc:
            results.append(Delivery(target, reason=str(exc)))
            continue
        results.append(await deliver(item, target, wait=wait, launch=launch))
    return results


def main(targets: list[str], *, wait: float, launch: bool, as_json: bool) -> int:
    import json

    try:
        results = trio.run(lambda: add_targets(targets, wait=wait, launch=launch))
    except KeyboardInterrupt:
        print("jst add: interrupted", file=sys.stderr)
        return 130
    if as_json:
        out = [{"link": r.link, "reason": r.reason, **r.to_json()} for r in results]
        print(json.dumps(out))
    else:
        for r in results:
            print(r.describe(), file=sys.stdout if r.delivered else sys.stderr)
    return 0 if all(r.delivered for r in results) else 1
