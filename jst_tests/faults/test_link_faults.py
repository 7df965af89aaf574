"""The link-handler killed, doubled, or racing a host restart: a link arrives at most
once, and exactly once when the link-handler says it succeeded."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from jst_tests.hostproc import HostEnv, HostProcess, running_host
from jst_tests.test_link_handler import (
    LINK_HANDLER,
    MAGNET,
    link,
    waiting_link_handler,
)


def events(host: HostProcess, within: float = 1.5) -> list[dict[str, Any]]:
    """Every frame the host writes during ``within`` seconds."""
    frames = []
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        try:
            frames.append(host.frames.get(timeout=left))
        except Exception:
            break
    return [f for f in frames if f is not None]


@pytest.mark.parametrize(("point", "expected"), [("link.before-send", 0), ("link.after-send", 1)])
def test_link_handler_killed_mid_delivery(host_env: HostEnv, point: str, expected: int) -> None:
    with running_host(host_env) as host:
        host_env.wait_for_profile(host.pid)
        killed = link(host_env, MAGNET, JST_FAULT=point)
        assert killed.returncode == -signal.SIGKILL
        assert len(events(host)) == expected  # never twice, never half
        assert link(host_env, MAGNET + "&again").returncode == 0  # the host is unharmed
        assert [e["payload"]["link"] for e in events(host)] == [MAGNET + "&again"]


def test_two_link_handlers_at_once_each_deliver_once(host_env: HostEnv) -> None:
    with running_host(host_env) as host:
        host_env.wait_for_profile(host.pid)
        environ = host_env.environ(JST_LINK_HANDLER_DIALOG="0")
        procs = [
            subprocess.Popen([LINK_HANDLER, f"{MAGNET}&n={n}"], env=environ,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for n in range(2)
        ]  # fmt: skip
        assert [p.wait(30) for p in procs] == [0, 0]
        got = sorted(e["payload"]["link"] for e in events(host))
        assert got == [f"{MAGNET}&n=0", f"{MAGNET}&n=1"]


def test_host_restarting_while_a_link_handler_waits(host_env: HostEnv, browser_dir: Path) -> None:
    first = second = None
    with waiting_link_handler(host_env, browser_dir) as waiting:
        try:
            first = HostProcess(host_env)
            host_env.wait_for_profile(first.pid)
            first.proc.kill()  # the host dies right after it appeared
            first.proc.wait()
            second = HostProcess(host_env)
            host_env.wait_for_profile(second.pid)
            status = waiting.wait(20)
            delivered = len(events(first, 0.1)) + len(events(second))
            if status == 0:
                assert delivered == 1, "reported success, so exactly once"
            else:
                assert status == 1
                assert delivered <= 1
                assert waiting.stderr is not None
                assert b"Reason:" in waiting.stderr.read()
        finally:
            for host in (first, second):
                if host is not None:
                    host.cleanup()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signals_end_a_waiting_link_handler_quietly(
    host_env: HostEnv, browser_dir: Path, signum: int
) -> None:
    with waiting_link_handler(host_env, browser_dir) as proc:
        started = time.monotonic()
        proc.send_signal(signum)
        _out, err = proc.communicate(timeout=2)
        assert time.monotonic() - started < 2
        assert (proc.returncode, err) == (0, b"")
    assert json.loads((browser_dir / "argv.json").read_text())  # it had launched
