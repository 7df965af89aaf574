from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from jst_tests.daemonproc import DaemonEnv, RunningDaemon, running_daemon
from jst_tests.hostproc import HostEnv, gone_within, kill_if_alive
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


@pytest.fixture
def host_env(tmp_path: Path) -> HostEnv:
    """A config dir, fake openers and a scripted folder picker for a native-host."""
    env = HostEnv(tmp_path)
    env.setup()
    return env


@pytest.fixture
def browser_dir(host_env: HostEnv) -> Iterator[Path]:
    """Where the stand-in browser (``fake_browser.py``) records itself; whatever it
    started is ended afterwards."""
    directory = host_env.base / "browser"
    directory.mkdir()
    yield directory
    pids = directory / "pids"
    if pids.exists():
        for pid in pids.read_text().split():
            kill_if_alive(int(pid))
        for pid in pids.read_text().split():
            assert gone_within(int(pid), 2)
