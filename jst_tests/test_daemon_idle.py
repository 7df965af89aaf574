"""``jst-io-daemon --idle-exit SECONDS``, and what a default-mode daemon does not serve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from jst_tests.daemonproc import DaemonEnv, RunningDaemon, read_port_line, spawn, stop
from jst_tests.httpclient import HttpClient
from jst_tests.ioclient import io_session
from jst_tests.serviceproc import ServiceEnv, oneshot, running_service, wait_for


async def test_idle_daemon_exits_zero(daemon_env: DaemonEnv) -> None:
    proc = spawn(daemon_env, [*daemon_env.daemon_args(), "--idle-exit", "0.5"])
    try:
        port = read_port_line(proc)
        async with HttpClient(port) as client:  # a request, then nothing
            assert (await client.request("GET", "/health")).status == 200
        assert await trio.to_thread.run_sync(proc.wait, 20) == 0
    finally:
        stop(proc)


async def test_a_websocket_session_keeps_the_daemon(daemon_env: DaemonEnv) -> None:
    proc = spawn(daemon_env, [*daemon_env.daemon_args(), "--idle-exit", "0.3"])
    try:
        port = read_port_line(proc)
        async with io_session(port, daemon_env.token):
            await trio.sleep(1.5)  # five idle periods
            assert proc.poll() is None
        assert await trio.to_thread.run_sync(proc.wait, 20) == 0
    finally:
        stop(proc)


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_bad_idle_exit_is_a_usage_error(daemon_env: DaemonEnv, value: str) -> None:
    proc = spawn(daemon_env, [*daemon_env.daemon_args(), "--idle-exit", value])
    try:
        assert proc.wait(20) == 2
    finally:
        stop(proc)


async def test_default_daemon_serves_no_service_routes(daemon: RunningDaemon) -> None:
    async with HttpClient(daemon.port) as client:
        for method, target in (("GET", "/roots"), ("DELETE", "/roots/k"), ("POST", "/open")):
            reply = await client.request(method, target, daemon.auth)
            assert reply.status == 404
        reply = await client.request(
            "GET", "/control",
            [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13"),
             ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), *daemon.auth],
        )  # fmt: skip
        assert reply.status == 404


def test_service_daemon_idle_exit_and_restart_on_demand(tmp_path: Path) -> None:
    env = ServiceEnv(tmp_path)
    env.setup()
    try:
        with running_service(env, "--daemon-idle-exit", "0.5"):
            first: Any = oneshot(env)[0]
            assert first is not None
            assert "port" in first
            wait_for(lambda: not env.daemons(), 20, "the idle daemon to exit")
            [install] = env.status()["installs"]
            assert install["state"] == "STOPPED"
            assert install["failure"] is None
            second: Any = oneshot(env)[0]
            assert second is not None
            assert "port" in second
            assert second["port"] == first["port"]  # free again, so the same
            assert len(env.daemons()) in (0, 1)  # it may be idle again already
    finally:
        env.cleanup()
