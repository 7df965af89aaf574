"""Which browser started us (§2.8 step 2) and which extension called (step 3).

Chrome starts the host directly on Linux and macOS and through ``cmd.exe`` on Windows;
packagers add wrapper scripts. So we walk up to ten ancestors, skip our own wrappers,
and take the first whose name looks like a browser; failing that, the first ancestor
with an executable path. The result goes into ``rpc-info.json``, where the
link-handler finds the binary to launch when no host is running.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import psutil

MAX_ANCESTORS = 10
BROWSER_WORDS = ("chrome", "firefox", "brave", "edge", "safari", "opera", "vivaldi", "arc")
WRAPPER_WORDS = ("jstorrent", "native-host")
EXTENSION_PREFIX = "chrome-extension://"


@attrs.frozen
class ProcessInfo:
    name: str
    exe: str


def ancestors(limit: int, pid: int | None = None) -> list[ProcessInfo]:
    """Up to ``limit`` ancestors of ``pid`` (default: this process), nearest first."""
    found: list[ProcessInfo] = []
    try:
        proc: psutil.Process | None = psutil.Process(pid).parent()
        while proc is not None and len(found) < limit:
            with proc.oneshot():
                try:
                    name = proc.name()
                except psutil.Error:
                    name = ""
                try:
                    exe = proc.exe()
                except psutil.Error:
                    exe = ""
            found.append(ProcessInfo(name, exe))
            proc = proc.parent()
    except psutil.Error:
        pass
    return found


def choose_browser(ancestors: Sequence[ProcessInfo]) -> tuple[str, str]:
    """(name, binary) per §2.8 step 2; ``("Unknown", "")`` when nothing fits."""
    candidates = [
        p
        for p in ancestors
        if not any(w in p.name.lower() for w in WRAPPER_WORDS)
        and not any(w in p.exe for w in WRAPPER_WORDS)
    ]
    for p in candidates:
        if any(w in p.name.lower() for w in BROWSER_WORDS):
            return p.name, p.exe
    for p in candidates:
        if p.exe:
            return p.name, p.exe
    return "Unknown", ""


def detect_browser() -> tuple[str, str]:
    return choose_browser(ancestors(MAX_ANCESTORS))


def extension_id_from_argv(argv: Sequence[str]) -> str | None:
    """The caller's id from ``chrome-extension://<id>/`` (Chrome passes it as argv[1])."""
    for arg in argv:
        if arg.startswith(EXTENSION_PREFIX):
            return arg[len(EXTENSION_PREFIX) :].rstrip("/")
    return None
