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

from jst_tests.faults.harness import wait_until
from jst_tests.hostproc import HostEnv, HostProcess, running_host
from jst_tests.test_link_handler import (
    LINK_HANDLER,
    MAGNET,
    install_fake_browser,
    link,
    wait_for_profile,
    write_dead_profile,
)


@pytest.fixture
def env(tmp_path: Path) -> HostEnv:
    host_env = HostEnv(tmp_path)
    host_env.setup()
    return host_env


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
def test_link_handler_killed_mid_delivery(env: HostEnv, point: str, expected: int) -> None:
    with running_host(env) as host:
        wait_for_profile(env, host.pid)
        killed = link(env, MAGNET, JST_FAULT=point)
        assert killed.returncode == -signal.SIGKILL
        assert len(events(host)) == expected  # never twice, never half
        assert link(env, MAGNET + "&again").returncode == 0  # the host is unharmed
        assert [e["payload"]["link"] for e in events(host)] == [MAGNET + "&again"]


def test_two_link_handlers_at_once_each_deliver_once(env: HostEnv) -> None:
    with running_host(env) as host:
        wait_for_profile(env, host.pid)
        environ = env.environ(JST_LINK_HANDLER_DIALOG="0")
        procs = [
            subprocess.Popen([LINK_HANDLER, f"{MAGNET}&n={n}"], env=environ,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for n in range(2)
        ]  # fmt: skip
        assert [p.wait(30) for p in procs] == [0, 0]
        got = sorted(e["payload"]["link"] for e in events(host))
        assert got == [f"{MAGNET}&n=0", f"{MAGNET}&n=1"]


def test_host_restarting_while_a_link_handler_waits(env: HostEnv) -> None:
    browser = install_fake_browser(env, "fakebrowser")
    write_dead_profile(env, str(browser))
    (env.base / "browser").mkdir()
    waiting = subprocess.Popen(
        [LINK_HANDLER, MAGNET],
        env=env.environ(JST_LINK_HANDLER_DIALOG="0", FAKE_BROWSER_DIR=str(env.base / "browser"),
                        FAKE_BROWSER_STARTS_HOST="0"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    first = second = None
    try:
        wait_until(lambda: (env.base / "browser" / "argv.json").exists(), 10, "the browser")
        first = HostProcess(env)
        wait_for_profile(env, first.pid)
        first.proc.kill()  # the host dies right after it appeared
        first.proc.wait()
        second = HostProcess(env)
        wait_for_profile(env, second.pid)
        status = waiting.wait(20)
        delivered = len(events(first, 0.1)) + len(events(second))
        if status == 0:
            assert delivered == 1, "reported success, so exactly once"
        else:
            assert status == 1
            assert delivered <= 1
            assert b"Reason:" in waiting.communicate()[1]
    finally:
        if waiting.poll() is None:
            waiting.kill()
        for host in (first, second):
            if host is not None:
                host.cleanup()
        pids = env.base / "browser" / "pids"
        if pids.exists():
            for pid in pids.read_text().split():
                subprocess.run(["kill", "-9", pid], check=False)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signals_end_a_waiting_link_handler_quietly(env: HostEnv, signum: int) -> None:
    browser = install_fake_browser(env, "fakebrowser")
    write_dead_profile(env, str(browser))
    (env.base / "browser").mkdir()
    proc = subprocess.Popen(
        [LINK_HANDLER, MAGNET],
        env=env.environ(JST_LINK_HANDLER_DIALOG="0", FAKE_BROWSER_DIR=str(env.base / "browser"),
                        FAKE_BROWSER_STARTS_HOST="0"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_until(lambda: (env.base / "browser" / "argv.json").exists(), 10, "the browser")
        started = time.monotonic()
        proc.send_signal(signum)
        _out, err = proc.communicate(timeout=2)
        assert time.monotonic() - started < 2
        assert (proc.returncode, err) == (0, b"")
    finally:
        if proc.poll() is None:
            proc.kill()
        pids = env.base / "browser" / "pids"
        if pids.exists():
            for pid in pids.read_text().split():
                subprocess.run(["kill", "-9", pid], check=False)
    assert json.loads((env.base / "browser" / "argv.json").read_text())  # it had launched
