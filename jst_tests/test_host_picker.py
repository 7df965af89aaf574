"""The folder dialog chain: portal first, then zenity, then kdialog (issue #4).

A private ``dbus-daemon`` (a Unix socket in the test's directory, nothing else on it)
hosts a stand-in portal, and fake ``zenity``/``kdialog`` scripts on ``PATH`` record how
they were called; the real host process picks through them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from jst_tests.hostproc import HostEnv, HostProcess, running_host

pytestmark = pytest.mark.skipif(
    shutil.which("dbus-daemon") is None, reason="dbus-daemon is not installed"
)


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[str]:
    address = f"unix:path={tmp_path}/bus"
    proc = subprocess.Popen(
        ["dbus-daemon", "--session", "--nofork", "--nopidfile", f"--address={address}",
         "--print-address=1"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(b"unix:")
        yield address
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def env(host_env: HostEnv, tmp_path: Path) -> HostEnv:
    """The host environment plus fake zenity and kdialog that log their arguments."""
    for name in ("zenity", "kdialog"):
        script = host_env.bin_dir / name
        script.write_text(f'#!/bin/sh\necho "$@" >> "{tmp_path}/{name}.log"\necho /picked/{name}\n')
        script.chmod(0o755)
    return host_env


def start_portal(bus: str, record: Path, answer: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "jst_tests.fake_portal", bus, str(record), answer],
        stdout=subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parent.parent)},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    return proc


def pick(env: HostEnv, **extra: str) -> dict[str, object]:
    with running_host(env, None, JST_FOLDER_PICKER="", **extra) as host:
        host.handshake()
        return pick_once(host)


def pick_once(host: HostProcess) -> dict[str, object]:
    return host.request({"op": "pickDownloadDirectory"})


def test_portal_is_the_first_choice(env: HostEnv, bus: str, tmp_path: Path) -> None:
    chosen = tmp_path / "Portal Pick"
    chosen.mkdir()
    record = tmp_path / "portal.jsonl"
    portal = start_portal(bus, record, str(chosen))
    try:
        reply = pick(env, DBUS_SESSION_BUS_ADDRESS=bus)
    finally:
        portal.kill()
        portal.wait()
    assert reply["ok"], reply
    assert reply["payload"]["root"]["path"] == str(chosen)  # type: ignore[index]
    [call] = [json.loads(line) for line in record.read_text().splitlines()]
    assert call["title"] == "Select Download Directory"
    assert call["options"]["directory"] is True
    assert call["options"]["current_folder"] == f"{Path.home()}\0"
    assert not (tmp_path / "zenity.log").exists()


@pytest.mark.parametrize(
    ("answer", "error"),
    [("cancel", "User cancelled folder selection"), ("fail", "failed (response 2)")],
)
def test_portal_cancel_and_failure(
    env: HostEnv, bus: str, tmp_path: Path, answer: str, error: str
) -> None:
    portal = start_portal(bus, tmp_path / "portal.jsonl", answer)
    try:
        reply = pick(env, DBUS_SESSION_BUS_ADDRESS=bus)
    finally:
        portal.kill()
        portal.wait()
    assert reply["ok"] is False
    assert error in str(reply["error"])
    assert not (tmp_path / "zenity.log").exists()  # a dialog was shown: no second one


def test_without_a_portal_zenity_is_used(env: HostEnv, bus: str, tmp_path: Path) -> None:
    reply = pick(env, DBUS_SESSION_BUS_ADDRESS=bus)
    assert reply["ok"], reply
    assert reply["payload"]["root"]["path"] == "/picked/zenity"  # type: ignore[index]
    args = (tmp_path / "zenity.log").read_text().split()
    assert args[:2] == ["--file-selection", "--directory"]
    assert "--title=Select" in args


def test_without_portal_or_zenity_kdialog_is_used(env: HostEnv, tmp_path: Path) -> None:
    (env.bin_dir / "zenity").unlink()
    reply = pick(env, DBUS_SESSION_BUS_ADDRESS="", PATH=f"{env.bin_dir}:/usr/bin:/bin")
    assert reply["ok"], reply
    assert reply["payload"]["root"]["path"] == "/picked/kdialog"  # type: ignore[index]
    assert (tmp_path / "kdialog.log").read_text().startswith("--getexistingdirectory ")
