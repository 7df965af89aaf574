"""Driving ``jst service`` and one-shot ``jst-native-host`` processes for tests.

A ``ServiceEnv`` is a ``HostEnv`` (config dir, fake opener, scripted folder picker) plus
its own runtime directory (``$XDG_RUNTIME_DIR``), so every test has its own
``service.sock`` and its own service. Processes are found by that unique directory in
their environment: cleanup kills exactly the ones this test started, even when the test
failed or the service was started detached by a one-shot host.
"""

from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import attrs
import psutil

from jst_tests import daemonproc
from jst_tests.hostproc import HOST, ORIGIN, HostEnv, gone_within

SERVICE = [sys.executable, "-m", "jst.service.cli"]
WAIT = 15.0


@attrs.define
class ServiceEnv(HostEnv):
    runtime: Path = attrs.field(
        factory=lambda: Path(tempfile.mkdtemp(prefix="jst-rt-", dir="/tmp"))
    )

    @property
    def socket(self) -> Path:
        return self.runtime / "jstorrent-native" / "service.sock"

    def environ(self, **extra: str) -> dict[str, str]:
        return super().environ(XDG_RUNTIME_DIR=str(self.runtime), **extra)

    def processes(self, *needles: str) -> list[psutil.Process]:
        """Our processes (by runtime dir) whose command line contains one of ``needles``."""
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if not any(n in " ".join(proc.info["cmdline"] or []) for n in needles):
                    continue
                cmdline = " ".join(proc.info["cmdline"] or [])
                try:
                    ours = proc.environ().get("XDG_RUNTIME_DIR") == str(self.runtime)
                except psutil.AccessDenied:  # in a user namespace (the e2e tests)
                    ours = str(self.runtime) in cmdline or self._is_service_pid(proc.pid)
                if not ours:
                    continue
                if proc.status() == psutil.STATUS_ZOMBIE:
                    continue
            except psutil.Error:
                continue
            found.append(proc)
        return found

    def _is_service_pid(self, pid: int) -> bool:
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(2)
                sock.connect(str(self.socket))
                sock.sendall(b'{"op": "status"}\n')
                return bool(json.loads(sock.makefile("rb").readline()).get("pid") == pid)
        except (OSError, ValueError):
            return False

    def services(self) -> list[psutil.Process]:
        # `python -m jst.service.cli run`, or `jst service run` (the console script)
        return self.processes("jst.service.cli run", "jst service run")

    def daemons(self) -> list[psutil.Process]:
        return self.processes("jst.daemon.cli", "jst-io-daemon")

    def cleanup(self) -> None:
        for proc in [*self.services(), *self.daemons(), *self.processes("fake")]:
            with suppress(psutil.Error):
                proc.kill()
        shutil.rmtree(self.runtime, ignore_errors=True)

    def cli(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*SERVICE, *args], capture_output=True, text=True, env=self.environ(**extra),
            timeout=30, check=False,
        )  # fmt: skip

    def status(self) -> dict[str, Any]:
        result = self.cli("status", "--json")
        status: dict[str, Any] = json.loads(result.stdout)
        return status


def nm_frame(message: Any) -> bytes:
    body = json.dumps(message).encode()
    return struct.pack("<I", len(body)) + body


def oneshot(
    env: ServiceEnv, message: Any | None = None, raw: bytes | None = None, **extra: str
) -> tuple[dict[str, Any] | None, subprocess.CompletedProcess[bytes]]:
    """Run jst-native-host as sendNativeMessage does: one frame, stdin closed, one reply."""
    if raw is None:
        raw = nm_frame(
            message
            if message is not None
            else {"type": "get_browser_endpoint", "installId": env.install_id}
        )
    proc = subprocess.run(
        [*HOST, ORIGIN], input=raw, capture_output=True, env=env.environ(**extra), timeout=60,
        check=False,
    )  # fmt: skip
    out = proc.stdout
    if len(out) < 4:
        return None, proc
    (length,) = struct.unpack("<I", out[:4])
    assert len(out) == 4 + length, f"exactly one frame expected, got {out!r}"
    reply: dict[str, Any] = json.loads(out[4:])
    return reply, proc


@contextmanager
def running_service(env: ServiceEnv, *args: str, **extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """``jst service run`` in the foreground, ready (service.sock answers)."""
    proc = subprocess.Popen(
        [*SERVICE, "run", *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, env=env.environ(**extra),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + WAIT
        while not env.status().get("running"):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
            assert time.monotonic() < deadline, "service did not come up"
            time.sleep(0.05)
        yield proc
    finally:
        with suppress(ProcessLookupError):
            proc.kill()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
        for daemon in env.daemons():
            gone_within(daemon.pid, 3)


def wait_for(predicate: Any, timeout: float = WAIT, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"{what} not reached within {timeout} s")


def write_profile(env: ServiceEnv, roots: dict[str, Path]) -> None:
    """An rpc-info.json with this install's profile and roots, as an earlier host left it."""
    daemonproc.write_profile(env.rpc_info, env.install_id, roots)
