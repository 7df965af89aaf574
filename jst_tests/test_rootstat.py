"""Download roots as the seed describes them: removable, last_stat_ok, last_checked."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from jst.rpcinfo import DownloadRoot
from jst.service import rootstat
from jst_tests.daemonproc import DaemonEnv
from jst_tests.hostproc import HostEnv, running_host


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux mount rules")
@pytest.mark.parametrize(
    ("path", "removable"),
    [("/media/usb/Downloads", True), ("/run/media/u/STICK", True), ("/mediocre/x", False)],
)
def test_removable_mounts(path: str, removable: bool) -> None:
    assert rootstat.is_removable(path) is removable


def test_refresh_reports_a_missing_folder(tmp_path: Path) -> None:
    before = int(time.time() * 1000)
    present = rootstat.refresh(DownloadRoot("a", str(tmp_path), "t", last_checked=1))
    missing = rootstat.refresh(DownloadRoot("b", str(tmp_path / "gone"), "g", last_checked=1))
    assert present.last_stat_ok is True
    assert missing.last_stat_ok is False
    assert present.last_checked >= before
    assert missing.last_checked >= before
    assert rootstat.control_root(missing) == {
        "key": "b", "uri": str(tmp_path / "gone"), "displayName": "g", "available": False,
    }  # fmt: skip


def test_handshake_reports_fresh_root_state(host_env: HostEnv, tmp_path: Path) -> None:
    """The default mode's DaemonInfo carries the refreshed fields too (issue 15)."""
    profile = DaemonEnv(host_env.base, install_id=host_env.install_id)
    present, gone = tmp_path / "present", tmp_path / "gone"
    present.mkdir()
    profile.write_rpc_info({"aaaaaaaaaaaaaaaa": present, "bbbbbbbbbbbbbbbb": gone})
    with running_host(host_env) as host:
        roots = host.handshake()["payload"]["roots"]
    assert [(r["key"], r["last_stat_ok"]) for r in roots] == [
        ("aaaaaaaaaaaaaaaa", True),
        ("bbbbbbbbbbbbbbbb", False),
    ]
    assert all(r["last_checked"] > 1 and r["removable"] is False for r in roots)
    # The file keeps what was written (no rewrite of the profile's roots on a handshake).
    assert [r["last_checked"] for r in host_env.profiles()[0]["download_roots"]] == [1, 1]
