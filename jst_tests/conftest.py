from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from jst_tests.daemonproc import DaemonEnv, RunningDaemon, running_daemon
from jst_tests.httpclient import HttpClient


@pytest.fixture
def daemon_env(tmp_path: Path) -> DaemonEnv:
    env = DaemonEnv(tmp_path)
    env.root.mkdir()
    env.write_rpc_info()
    return env


@pytest.fixture
def daemon(daemon_env: DaemonEnv) -> Iterator[RunningDaemon]:
    with running_daemon(daemon_env) as running:
        yield running


@pytest.fixture
async def client(daemon: RunningDaemon) -> AsyncIterator[HttpClient]:
    async with HttpClient(daemon.port) as c:
        yield c
