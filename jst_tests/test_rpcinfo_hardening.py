"""rpc-info.json that is valid JSON but unusable, and files rewritten in place (issue 12,
items 5 and 9): moved aside, never fatal; backups bounded; a half-written file re-read."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jst.host import store as store_module
from jst.host.profiles import HostRecord
from jst.host.store import RpcInfoStore
from jst.rpcinfo import Browser, RpcInfoError, parse_rpc_info
from jst_tests.daemonproc import DaemonEnv, running_daemon
from jst_tests.hostproc import HostEnv, http, running_host

DEEP = b'{"version":1,"profiles":[],"x":' + b"[" * 5000 + b"]" * 5000 + b"}"
SURROGATE = b'{"version":1,"profiles":[],"note":"\\ud800"}'
MAX_BACKUPS = 10  # the promise


def backups(directory: Path) -> list[Path]:
    """The corrupt-file backups, oldest first."""
    found = directory.glob("rpc-info.json.corrupt-*")
    return sorted(found, key=lambda p: int(p.name.rsplit("-", 1)[1]))


def record(install_id: str = "i") -> HostRecord:
    return HostRecord(
        pid=100, port=4000, token="tok", started=1_700_000_000,
        browser=Browser("chrome", "", "ext"), install_id=install_id,
    )  # fmt: skip


@pytest.mark.parametrize("content", [DEEP, SURROGATE], ids=["5000-deep", "lone-surrogate"])
def test_unwritable_json_is_an_rpc_info_error(content: bytes) -> None:
    with pytest.raises(RpcInfoError):
        parse_rpc_info(content)


def test_a_surrogate_in_a_profile_field_is_refused_too() -> None:
    profile = {
        "pid": 1, "port": 2, "token": "\ud800", "started": 3, "last_used": 3,
        "browser": {"name": "b", "binary": ""}, "download_roots": [],
    }  # fmt: skip
    with pytest.raises(RpcInfoError):
        parse_rpc_info(json.dumps({"version": 1, "profiles": [profile]}).encode())


@pytest.mark.parametrize("content", [DEEP, SURROGATE], ids=["5000-deep", "lone-surrogate"])
def test_host_moves_such_a_file_aside_and_handshakes(host_env: HostEnv, content: bytes) -> None:
    host_env.rpc_info.parent.mkdir(parents=True)
    host_env.rpc_info.write_bytes(content)
    with running_host(host_env) as host:
        host.handshake()
        backups = list(host_env.rpc_info.parent.glob("rpc-info.json.corrupt-*"))
        assert [b.read_bytes() for b in backups] == [content]
        assert [p["install_id"] for p in host_env.profiles()] == [host_env.install_id]


@pytest.mark.parametrize("content", [DEEP, SURROGATE], ids=["5000-deep", "lone-surrogate"])
def test_daemon_warns_about_such_a_file_and_serves(tmp_path: Path, content: bytes) -> None:
    env = DaemonEnv(tmp_path)
    env.root.mkdir()
    env.write_rpc_info()
    env.rpc_info.write_bytes(content)
    with running_daemon(env) as daemon:
        assert http(daemon.port, "/health")[0] == 200
        assert daemon.proc.poll() is None


def test_only_the_newest_backups_are_kept(tmp_path: Path) -> None:
    store = RpcInfoStore(tmp_path / "rpc-info.json")
    written = []
    for n in range(MAX_BACKUPS + 5):
        content = b"{broken %d" % n
        store.path.write_bytes(content)
        written.append(content)
        store.update(record())
        time.sleep(0.002)  # distinct millisecond stamps
    kept = backups(tmp_path)
    assert len(kept) == MAX_BACKUPS
    assert [b.read_bytes() for b in kept] == written[-MAX_BACKUPS:]


def test_a_file_mid_rewrite_is_read_again_before_it_counts_as_corrupt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RpcInfoStore(tmp_path / "rpc-info.json")
    store.update(record("kept"))
    whole = store.path.read_bytes()
    store.path.write_bytes(whole[: len(whole) // 2])  # another program is half-way through
    pauses: list[float] = []

    def writer_finishes(seconds: float) -> None:
        pauses.append(seconds)
        store.path.write_bytes(whole)

    monkeypatch.setattr(store_module, "pause", writer_finishes)
    store.update(record("new"))
    assert len(pauses) == 1
    assert 0 < pauses[0] <= 0.2
    assert backups(tmp_path) == []
    assert sorted(p.install_id or "" for p in store.read().profiles) == ["kept", "new"]


REWRITER = """
import sys, time
path, content, seconds = sys.argv[1], sys.argv[2].encode(), float(sys.argv[3])
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    with open(path, "wb") as f:  # in place, in two writes: readers see half a file
        f.write(content[: len(content) // 2])
        f.flush()
        time.sleep(0.002)
        f.write(content[len(content) // 2 :])
"""


def test_a_program_rewriting_the_file_in_place_leaves_at_most_ten_backups(
    host_env: HostEnv,
) -> None:
    host_env.rpc_info.parent.mkdir(parents=True)
    content = json.dumps({"version": 1, "profiles": [], "pad": "x" * 4000})
    host_env.rpc_info.write_text(content)
    rewriter = subprocess.Popen(
        [sys.executable, "-c", REWRITER, str(host_env.rpc_info), content, "8"]
    )
    try:
        with running_host(host_env) as host:
            deadline = time.monotonic() + 8
            handshakes = 0
            while time.monotonic() < deadline and handshakes < 200:
                host.handshake()
                handshakes += 1
        assert rewriter.wait(20) == 0
    finally:
        if rewriter.poll() is None:
            rewriter.kill()
            rewriter.wait()
    assert len(backups(host_env.rpc_info.parent)) <= MAX_BACKUPS, handshakes
