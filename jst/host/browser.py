"""Which browser started us (§2.8 step 2) and which extension called (step 3).

Chrome starts the host directly on Linux and macOS and through ``cmd.exe`` on Windows;
packagers add wrapper scripts. So we walk up to ten ancestors, skip our own wrappers,
and take the first whose name looks like a browser; failing that, the first ancestor
with an executable path. The result goes into ``rpc-info.json``, where the
link-handler finds the binary to launch when no host is running.

On Linux the walk reads ``/proc`` itself, exactly as psutil would (the same name,
including its long-name rule, and the same executable path): importing psutil costs
~10 ms of the host's cold start, before the first ``DaemonInfo`` (issue 17).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import attrs

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
    if sys.platform.startswith("linux") and os.path.isdir("/proc/self"):
        return _proc_ancestors(limit, os.getpid() if pid is None else pid)
    return _psutil_ancestors(limit, pid)


def _proc_stat(pid: int) -> tuple[str, int, int]:
    """(name, parent pid, start time in clock ticks) from ``/proc/<pid>/stat``."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    # The name is between the first "(" and the last ")": it may itself hold either.
    name = data[data.index(b"(") + 1 : data.rindex(b")")].decode("utf-8", "surrogateescape")
    fields = data[data.rindex(b")") + 2 :].split()
    return name, int(fields[1]), int(fields[19])


def _proc_name(pid: int, short: str) -> str:
    """psutil's ``name()``: the kernel truncates it to 15 bytes; then the base name of
    argv[0] is taken instead when it starts with the truncated one."""
    if len(short) < 15:
        return short
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            data = f.read().decode("utf-8", "surrogateescape")
    except OSError:
        return short
    if not data:
        return short
    # As psutil splits it: NUL-separated, unless a process rewrote it with spaces.
    sep = "\0" if data.endswith("\0") else " "
    argv = data.removesuffix(sep).split(sep)
    if sep == "\0" and len(argv) == 1 and " " in argv[0]:
        argv = argv[0].split(" ")
    extended = os.path.basename(argv[0])
    return extended if extended.startswith(short) else short


def _proc_exe(pid: int) -> str:
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""
    return exe.split("\0", 1)[0].removesuffix(" (deleted)")


def _proc_ancestors(limit: int, pid: int) -> list[ProcessInfo]:
    found: list[ProcessInfo] = []
    try:
        _, ppid, started = _proc_stat(pid)
        while ppid > 0 and len(found) < limit:
            name, parent_ppid, parent_started = _proc_stat(ppid)
            if parent_started > started:
                break  # the pid was reused after our parent died: not our ancestor
            found.append(ProcessInfo(_proc_name(ppid, name), _proc_exe(ppid)))
            ppid, started = parent_ppid, parent_started
    except (OSError, ValueError, IndexError):
        pass
    return found


def _psutil_ancestors(limit: int, pid: int | None) -> list[ProcessInfo]:
    import psutil

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
