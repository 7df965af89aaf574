"""``jst service run --launch-browser`` (SERVICE.md §4): start the browser once.

Which browser: the one recorded in ``rpc-info.json`` by the most recent profile (what
the link-handler would launch, ``linkhandler/launch.py``), else the desktop's default
(Linux: ``xdg-settings get default-web-browser`` and its ``.desktop`` file's ``Exec``;
macOS and Windows: only the recorded browser).
Chromium-family browsers get ``--no-startup-window``: they run their extensions in the
background, without a window. The browser is started detached, in its own session, so
it keeps running whatever happens to the service; it is started once, never again; a
browser that already runs is left alone.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import psutil

from jst.linkhandler.launch import recorded_browser

log = logging.getLogger("jst.service.browser")

CHROMIUM_FAMILY = ("chrome", "chromium", "brave", "edge", "vivaldi", "opera")
NO_WINDOW = "--no-startup-window"


def _desktop_default() -> str | None:
    """Linux: the default browser's executable, from its .desktop entry."""
    xdg_settings = shutil.which("xdg-settings")
    if xdg_settings is None:
        return None
    try:
        desktop_id = subprocess.run(
            [xdg_settings, "get", "default-web-browser"],
            capture_output=True, text=True, timeout=5, check=False,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    if not desktop_id.endswith(".desktop"):
        return None
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local/share")
    data_dirs = os.environ.get("XDG_DATA_DIRS") or "/usr/local/share:/usr/share"
    for base in [data_home, *data_dirs.split(":")]:
        entry = Path(base) / "applications" / desktop_id
        try:
            lines = entry.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith("Exec="):
                argv = shlex.split(line[len("Exec=") :])
                return shutil.which(argv[0]) if argv else None
    return None


def already_running(binary: str) -> bool:
    """A process of ``binary`` runs (its executable, or the script an interpreter runs)."""
    real = os.path.realpath(binary)
    for proc in psutil.process_iter(["exe", "cmdline"]):
        try:
            candidates = [proc.info.get("exe") or "", *(proc.info.get("cmdline") or [])[:2]]
        except (psutil.Error, OSError):
            continue
        if any(c and os.path.isabs(c) and os.path.realpath(c) == real for c in candidates):
            return True
    return False


def browser_argv(binary: str) -> list[str]:
    name = os.path.basename(binary).lower()
    if any(word in name for word in CHROMIUM_FAMILY):
        return [binary, NO_WINDOW]
    return [binary]


def launch_once(rpc_info: Path) -> int | None:
    """Start the browser unless it runs; its pid, or ``None`` (and the log says why)."""
    binary = recorded_browser(rpc_info)
    if binary is None and sys.platform.startswith("linux"):
        binary = _desktop_default()
    if binary is None:
        log.warning("--launch-browser: no browser recorded and no desktop default found")
        return None
    if already_running(binary):
        log.info("--launch-browser: %s already runs; left alone", binary)
        return None
    try:
        proc = subprocess.Popen(
            browser_argv(binary),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=sys.platform != "win32",
            close_fds=True,
        )
    except OSError as exc:
        log.error("--launch-browser: cannot start %s: %s", binary, exc)
        return None
    log.info("--launch-browser: started %s (pid %d)", binary, proc.pid)
    return proc.pid
