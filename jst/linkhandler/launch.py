"""No host is running: open the browser on the launch page so the extension starts one.

The URL is ``LAUNCH_URL`` (env file, §3.4) or the original's default, with the link in
the *fragment* (``#magnet=<percent-encoded>`` or ``#torrent_path=<percent-encoded>``):
a fragment never reaches a server, so the link stays on this machine (§9.25).

The browser is the one recorded in ``rpc-info.json`` by the newest host (the binary its
ancestor walk found), if it still exists and is not a shell, an interpreter or one of
ours; else the desktop's default handler for URLs. Arguments always go as a list, never
through a shell, so ``&`` and quotes in a link are inert (the original's
``cmd /C start`` broke on ``&``).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

from jst.linkhandler.target import LinkError, Magnet, TorrentFile
from jst.rpcinfo import RpcInfoError, parse_rpc_info

log = logging.getLogger("jst.linkhandler")

DEFAULT_LAUNCH_URL = "https://new.jstorrent.com/launch"
# Executables that are not browsers even though a host's ancestor walk may find them
# (a host started from a terminal or a test). Compared with the file name only: the
# original rejected any path containing "sh", such as /usr/share/... (§9.25).
NOT_BROWSERS = {
    "sh", "bash", "zsh", "fish", "dash", "ksh", "tcsh", "csh", "env", "sudo",
    "cargo", "node", "cmd.exe", "powershell.exe", "pwsh", "explorer.exe",
}  # fmt: skip
NOT_BROWSER_PARTS = ("python", "jstorrent-", "jst-", "terminal", "console", "konsole")


def launch_url(base: str, item: Magnet | TorrentFile) -> str:
    # The argument's own bytes, percent-encoded: one that is not UTF-8 survives exactly.
    if isinstance(item, Magnet):
        return f"{base}#magnet={quote(os.fsencode(item.link), safe='')}"
    return f"{base}#torrent_path={quote(os.fsencode(item.path), safe='')}"


def acceptable_browser(binary: str) -> bool:
    if not binary or not os.path.isabs(binary):
        return False
    name = os.path.basename(binary).lower()
    if name in NOT_BROWSERS or any(part in name for part in NOT_BROWSER_PARTS):
        return False
    return os.path.isfile(binary) and os.access(binary, os.X_OK)


def recorded_browser(rpc_info: Path) -> str | None:
    """The browser binary of the most recently started host, if it is usable."""
    try:
        info = parse_rpc_info(rpc_info.read_bytes())
    except (OSError, RpcInfoError):
        return None
    started = [p for p in info.profiles if p.last_used > 0]
    if not started:
        return None
    newest = max(started, key=lambda p: p.last_used)
    binary = newest.browser.binary
    if acceptable_browser(binary):
        return binary
    log.info("recorded browser %r is not usable; using the desktop's default", binary)
    return None


def _spawn(argv: list[str]) -> None:
    # Detached: the browser must outlive us, and must not hold our stdio.
    subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=sys.platform != "win32",
        close_fds=True,
    )


def open_browser(url: str, browser: str | None) -> None:
    if browser is not None:
        try:
            _spawn([browser, url])
            log.info("launched %s", browser)
            return
        except OSError as exc:
            log.info("cannot launch %s (%s); using the desktop's default", browser, exc)
    try:
        if sys.platform == "win32":
            os.startfile(url)  # type: ignore[attr-defined]  # noqa: S606 (no shell parsing)
        elif sys.platform == "darwin":
            _spawn(["open", url])
        else:
            _spawn(["xdg-open", url])
    except OSError as exc:
        raise LinkError(f"Could not launch browser. Please open JSTorrent manually: {url}") from exc
