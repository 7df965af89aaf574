"""Fault-injection helpers: find processes and fds, arm fault points, limit resources.

Processes are found by what they are (pid, parent, command line), never by name alone,
and only processes a test started are ever signalled. Waits are bounded; a helper that
gives up says what it was waiting for.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from collections.abc import Callable

import psutil

from jst_tests.hostproc import HostEnv, HostProcess


def descendants(pid: int) -> set[int]:
    try:
        return {p.pid for p in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def daemons_of(host_pid: int) -> set[int]:
    """io-daemons started by ``host_pid``, whether or not it is still their parent."""
    found: set[int] = set()
    marker = ["--parent-pid", str(host_pid)]
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if any(cmdline[i : i + 2] == marker for i in range(len(cmdline) - 1)):
            found.add(proc.pid)
    return found


class DaemonWatch:
    """Records every daemon a host starts, even one that lives a few milliseconds."""

    def __init__(self, host_pid: int) -> None:
        self.host_pid = host_pid
        self.seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.seen |= daemons_of(self.host_pid)
            self._stop.wait(0.005)

    def stop(self) -> set[int]:
        self._stop.set()
        self._thread.join()
        self.seen |= daemons_of(self.host_pid)
        return self.seen


def limits(nofile: int | None = None, fsize: int | None = None) -> Callable[[], None]:
    """A ``preexec_fn`` that lowers RLIMIT_NOFILE / RLIMIT_FSIZE in the child."""

    def apply() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return apply


def start_host(env: HostEnv, fault: str | None = None, **extra: str) -> HostProcess:
    if fault is not None:
        extra["JST_FAULT"] = fault
    return HostProcess(env, None, **extra)


def sleeping_picker(env: HostEnv) -> str:
    """A folder dialog that never answers; it records its pid in ``picker.pid``."""
    script = env.bin_dir / "slow-picker"
    script.write_text(f'#!/bin/sh\necho $$ > "{env.base}/picker.pid"\nexec sleep 60\n')
    script.chmod(0o755)
    return str(script)


def picker_pid(env: HostEnv) -> int:
    path = env.base / "picker.pid"
    wait_until(lambda: path.exists() and path.read_text().strip() != "", 10, "the picker")
    return int(path.read_text())
