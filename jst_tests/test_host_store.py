"""rpc-info.json updates: the merge (§3.3, §9.18) and the file on disk (§9.17)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jst.host.profiles import HostRecord, merge
from jst.host.store import RpcInfoStore, StoreError
from jst.rpcinfo import Browser, DownloadRoot, RpcInfo, dump_rpc_info, parse_rpc_info

DEAD_PID = 2**22 + 12345  # above Linux's pid_max default ceiling: never a live process


def record(pid: int = 100, install_id: str | None = None, **kw: object) -> HostRecord:
    return HostRecord(
        pid=pid,
        port=4000,
        token="tok",
        started=1_700_000_000,
        browser=Browser("chrome", sys.executable, kw.pop("extension_id", "ext")),  # type: ignore[arg-type]
        install_id=install_id,
        **kw,  # type: ignore[arg-type]
    )


def run_merge(info: RpcInfo, rec: HostRecord, alive: set[int] | None = None) -> list[str]:
    roots = merge(
        info, rec, binary_exists=os.path.exists, pid_alive=lambda pid: pid in (alive or set())
    )
    return [r.key for r in roots]


def test_startup_entry_is_merged_into_the_install_profile_which_keeps_its_roots() -> None:
    info = RpcInfo()
    run_merge(info, record(pid=1, install_id="inst", roots=[DownloadRoot("k1", "/a")]))
    run_merge(info, record(pid=2))  # a new host starts: temporary pid-keyed entry
    assert [(p.pid, p.install_id) for p in info.profiles] == [(1, "inst"), (2, None)]
    keys = run_merge(info, record(pid=2, install_id="inst"))  # its handshake
    assert keys == ["k1"]
    assert [(p.pid, p.install_id) for p in info.profiles] == [(2, "inst")]


def test_a_reused_pid_does_not_inherit_another_installs_roots() -> None:
    info = RpcInfo()
    run_merge(info, record(pid=7, install_id="alice", roots=[DownloadRoot("k", "/alice")]))
    # Alice's host died; a new host for Bob gets the same pid.
    assert run_merge(info, record(pid=7)) == []
    assert run_merge(info, record(pid=7, install_id="bob")) == []
    alice = next(p for p in info.profiles if p.install_id == "alice")
    assert [r.path for r in alice.download_roots] == ["/alice"]


def test_a_deleted_browser_binary_is_not_recorded(tmp_path: Path) -> None:
    info = RpcInfo()
    run_merge(info, record(install_id="i"))
    updated = record(install_id="i")
    updated.browser = Browser("chrome", "/opt/google/chrome/chrome (deleted)", "ext2")
    run_merge(info, updated)
    browser = info.profiles[0].browser
    assert (browser.name, browser.binary, browser.extension_id) == (
        "chrome",
        sys.executable,
        "ext2",
    )


def test_dead_temporary_entries_are_pruned_but_profiles_with_roots_are_not() -> None:
    info = RpcInfo()
    run_merge(info, record(pid=DEAD_PID))
    run_merge(info, record(pid=DEAD_PID + 1, roots=[DownloadRoot("k", "/r")]))
    run_merge(info, record(pid=DEAD_PID + 2, install_id="old"))
    run_merge(info, record(pid=5), alive={5})
    assert sorted(p.pid for p in info.profiles) == [5, DEAD_PID + 1, DEAD_PID + 2]


def test_explicit_roots_replace_and_unknown_keys_survive(tmp_path: Path) -> None:
    doc = {
        "version": 1,
        "salt": "s",
        "profiles": [
            {
                "extension_id": "ext",
                "install_id": "i",
                "pid": 1,
                "port": 2,
                "token": "t",
                "started": 3,
                "last_used": 3,
                "browser": {"name": "b", "binary": "", "extension_id": None, "x": 1},
                "download_roots": [{"key": "old", "path": "/old", "color": "red"}],
                "note": "kept",
            },
            {"pid": "not a number"},
        ],
    }
    info = parse_rpc_info(json.dumps(doc).encode())
    run_merge(info, record(install_id="i", roots=[DownloadRoot("new", "/new")]))
    out = json.loads(dump_rpc_info(info))
    assert out["salt"] == "s"
    assert out["profiles"][1] == {"pid": "not a number"}
    profile = out["profiles"][0]
    assert profile["note"] == "kept"
    assert profile["browser"]["x"] == 1
    assert [r["key"] for r in profile["download_roots"]] == ["new"]
    assert list(profile)[:9] == [
        "extension_id", "install_id", "pid", "port", "token",
        "started", "last_used", "browser", "download_roots",
    ]  # fmt: skip


# -- on disk ---------------------------------------------------------------------------------


def test_file_is_written_whole_with_owner_only_permissions(tmp_path: Path) -> None:
    store = RpcInfoStore(tmp_path / "app" / "rpc-info.json")
    store.update(record(install_id="i"))
    assert (store.path.stat().st_mode & 0o777) == 0o600
    assert parse_rpc_info(store.path.read_bytes()).profiles[0].install_id == "i"
    assert sorted(p.name for p in store.path.parent.iterdir()) == [
        "rpc-info.json",
        "rpc-info.json.lock",
    ]


@pytest.mark.parametrize(
    "content",
    [b"", b"{not json", b"[1,2,3]", b'{"profiles":{}}', b"\xff\xfe garbage", b" " * 17_000_000],
    ids=["empty", "truncated", "array", "wrong-type", "binary", "huge"],
)
def test_unparsable_file_is_moved_aside_not_lost(tmp_path: Path, content: bytes) -> None:
    store = RpcInfoStore(tmp_path / "rpc-info.json")
    store.path.write_bytes(content)
    store.update(record(install_id="i"))
    [backup] = tmp_path.glob("rpc-info.json.corrupt-*")
    assert backup.read_bytes() == content
    assert [p.install_id for p in store.read().profiles] == ["i"]


def test_unreadable_file_is_not_replaced(tmp_path: Path) -> None:
    store = RpcInfoStore(tmp_path / "rpc-info.json")
    store.path.mkdir()  # unreadable as a file, even for root
    (store.path / "keep").write_bytes(b"x")
    with pytest.raises(StoreError):
        store.update(record(install_id="i"))
    assert (store.path / "keep").read_bytes() == b"x"


WRITER = """
import sys
from jst.host.profiles import HostRecord
from jst.host.store import RpcInfoStore, StoreError
from jst.rpcinfo import Browser, DownloadRoot
from pathlib import Path

path, n, updates = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
store = RpcInfoStore(path)
roots = []
for m in range(updates):
    roots.append(DownloadRoot(key=f"w{n}-r{m}", path=f"/w{n}/r{m}"))
    rec = HostRecord(pid=1000 + n, port=1, token="t", started=1,
                     browser=Browser("b", "", None), install_id=f"install-{n}", roots=list(roots))
    store.update(rec)
"""


@pytest.mark.slow
def test_concurrent_hosts_lose_no_update(tmp_path: Path) -> None:
    writers, updates = 8, 25
    path = tmp_path / "rpc-info.json"
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(n), str(updates)])
        for n in range(writers)
    ]
    try:
        assert [p.wait(120) for p in procs] == [0] * writers
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    info = parse_rpc_info(path.read_bytes())
    assert sorted(p.install_id or "" for p in info.profiles) == sorted(
        f"install-{n}" for n in range(writers)
    )
    for profile in info.profiles:
        n = int((profile.install_id or "").split("-")[1])
        assert [r.key for r in profile.download_roots] == [f"w{n}-r{m}" for m in range(updates)]
    assert not list(tmp_path.glob(".rpc-info.*"))  # no temp file left behind
