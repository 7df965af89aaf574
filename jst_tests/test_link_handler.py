"""jst-link-handler against real hosts, a stand-in browser, and every bad input (§7)."""

from __future__ import annotations

import base64
import json
import os
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from jst_tests.faults.harness import wait_until
from jst_tests.hostproc import HostEnv, HostProcess, running_host

BIN = Path(sys.executable).parent
LINK_HANDLER = str(BIN / "jst-link-handler")
MAGNET = "magnet:?xt=urn:btih:" + "c" * 40 + '&dn=A & "B"&tr=udp%3A%2F%2Fx'
TORRENT = b"d8:announce9:udp://x:14:infod6:lengthi1e4:name1:a12:piece lengthi16384e6:pieces0:ee"


def link(host_env: HostEnv, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    environ = host_env.environ(JST_LINK_HANDLER_DIALOG="0", **extra)
    return subprocess.run(
        [LINK_HANDLER, *args], capture_output=True, text=True, env=environ, timeout=60, check=False
    )


@pytest.fixture
def host(host_env: HostEnv) -> Iterator[HostProcess]:
    with running_host(host_env) as h:
        host_env.wait_for_profile(h.pid)
        yield h


# -- with a host running ----------------------------------------------------------------------


def test_magnet_reaches_the_running_host_quietly(host_env: HostEnv, host: HostProcess) -> None:
    result = link(host_env, MAGNET)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert host.recv() == {"event": "MagnetAdded", "payload": {"link": MAGNET}}
    log = (host_env.rpc_info.parent / "jst-link-handler.log").read_text()
    assert "via unix:" in log  # our own host's private socket
    assert "finished successfully" in log


@pytest.mark.parametrize("as_uri", [False, True], ids=["path", "file-uri"])
def test_torrent_file_reaches_the_host(
    host_env: HostEnv, host: HostProcess, tmp_path: Path, as_uri: bool
) -> None:
    path = tmp_path / "My Show [1080p].torrent"
    path.write_bytes(TORRENT)
    result = link(host_env, path.as_uri() if as_uri else str(path))
    assert (result.returncode, result.stderr) == (0, "")
    assert host.recv() == {
        "event": "TorrentAdded",
        "payload": {
            "name": "My Show [1080p].torrent",
            "infohash": "",
            "contentsBase64": base64.b64encode(TORRENT).decode(),
        },
    }


def test_hosts_of_the_original_are_reached_over_tcp(host_env: HostEnv, host: HostProcess) -> None:
    doc = json.loads(host_env.rpc_info.read_text())
    for profile in doc["profiles"]:
        profile.pop("jst_link", None)  # as the original host writes it
    host_env.rpc_info.write_text(json.dumps(doc))
    assert link(host_env, MAGNET).returncode == 0
    assert host.recv()["payload"] == {"link": MAGNET}
    assert "via tcp:127.0.0.1:" in (host_env.rpc_info.parent / "jst-link-handler.log").read_text()


def test_stale_profiles_are_skipped(host_env: HostEnv, host: HostProcess) -> None:
    doc = json.loads(host_env.rpc_info.read_text())
    live = doc["profiles"][0]
    stale = [
        # a live pid (this test) whose port is not a host; newer, so tried first
        dict(live, pid=os.getpid(), port=9, token="x", last_used=live["last_used"] + 100),
        dict(live, pid=2**22 + 7, last_used=live["last_used"] + 50),  # a dead pid
    ]
    for profile in stale:
        profile.pop("jst_link", None)
    doc["profiles"] = [*stale, live]
    host_env.rpc_info.write_text(json.dumps(doc))
    assert link(host_env, MAGNET).returncode == 0
    assert host.recv()["payload"] == {"link": MAGNET}


# -- without a host ---------------------------------------------------------------------------


def write_dead_profile(host_env: HostEnv, binary: str) -> None:
    host_env.rpc_info.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "extension_id": "e", "install_id": "i", "pid": 2**22 + 9, "port": 9, "token": "t",
        "started": 5, "last_used": 5,
        "browser": {"name": "fakebrowser", "binary": binary, "extension_id": "e"},
        "download_roots": [],
    }  # fmt: skip
    host_env.rpc_info.write_text(json.dumps({"version": 1, "profiles": [profile]}))
    (host_env.rpc_info.parent / "jstorrent-native.env").write_text(
        "LAUNCH_URL=http://127.0.0.1:9/launch\n"
    )


def install_fake_browser(host_env: HostEnv, name: str) -> Path:
    script = host_env.bin_dir / name
    script.write_text(
        f'#!/bin/sh\nexec {sys.executable} {Path(__file__).parent / "fake_browser.py"} "$@"\n'
    )
    script.chmod(0o755)
    return script


def read_frame(path: Path, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = path.read_bytes() if path.exists() else b""
        if len(data) >= 4 and len(data) >= 4 + struct.unpack("<I", data[:4])[0]:
            frame: dict[str, Any] = json.loads(data[4 : 4 + struct.unpack("<I", data[:4])[0]])
            return frame
        time.sleep(0.05)
    raise AssertionError("the started host wrote no frame")


@contextmanager
def waiting_link_handler(host_env: HostEnv, browser_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A link-handler that finds no host, opens the stand-in browser (which starts none)
    and is left waiting for one; ended at exit if it still runs."""
    browser = install_fake_browser(host_env, "fakebrowser")
    write_dead_profile(host_env, str(browser))
    environ = host_env.environ(
        JST_LINK_HANDLER_DIALOG="0", FAKE_BROWSER_DIR=str(browser_dir), FAKE_BROWSER_STARTS_HOST="0"
    )
    proc = subprocess.Popen(
        [LINK_HANDLER, MAGNET], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environ
    )
    try:
        wait_until(lambda: (browser_dir / "argv.json").exists(), 10, "the browser to open")
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.mark.parametrize("recorded", ["fakebrowser", "/bin/bash"])
def test_without_a_host_the_browser_is_opened_and_the_link_delivered(
    host_env: HostEnv, browser_dir: Path, recorded: str
) -> None:
    browser = install_fake_browser(host_env, "fakebrowser")
    install_fake_browser(host_env, "xdg-open")  # the desktop default, used for a shell
    write_dead_profile(host_env, str(browser) if recorded == "fakebrowser" else recorded)
    result = link(
        host_env,
        MAGNET,
        FAKE_BROWSER_DIR=str(browser_dir),
        FAKE_BROWSER_HOST=str(BIN / "jst-native-host"),
    )
    assert (result.returncode, result.stderr) == (0, "")
    argv = json.loads((browser_dir / "argv.json").read_text())
    assert argv == [f"http://127.0.0.1:9/launch#magnet={quote(MAGNET, safe='')}"]
    assert read_frame(browser_dir / "host-stdout") == {
        "event": "MagnetAdded",
        "payload": {"link": MAGNET},
    }


@pytest.mark.slow
def test_without_a_host_and_no_host_appearing_it_times_out(
    host_env: HostEnv, browser_dir: Path
) -> None:
    browser = install_fake_browser(host_env, "fakebrowser")
    write_dead_profile(host_env, str(browser))
    started = time.monotonic()
    result = link(host_env, MAGNET, FAKE_BROWSER_DIR=str(browser_dir), FAKE_BROWSER_STARTS_HOST="0")
    assert result.returncode == 1
    assert "Reason: Timed out waiting for native host to start" in result.stderr
    assert 9.5 < time.monotonic() - started < 20


# -- bad input ------------------------------------------------------------------------------


def test_usage_errors_exit_2(host_env: HostEnv) -> None:
    assert link(host_env).returncode == 2
    assert link(host_env, MAGNET, "extra").returncode == 2
    version = link(host_env, "--version")
    assert (version.returncode, version.stdout.startswith("jst-link-handler ")) == (0, True)


def bad_inputs(tmp: Path) -> dict[str, tuple[str, str]]:
    (tmp / "notes.txt").write_text("hello")
    (tmp / "big.torrent").write_bytes(b"d4:infod6:pieces" + b"x" * 700_000 + b"ee")
    (tmp / "folder.torrent").mkdir()
    return {
        "no info hash": ("magnet:?dn=Just+a+name", "it has no info hash"),
        "short hash": ("magnet:?xt=urn:btih:1234", "it has no info hash"),
        "not a magnet": ("magnet:foo", "it must start with 'magnet:?'"),
        "missing file": (str(tmp / "gone.torrent"), f"File does not exist: {tmp}/gone.torrent"),
        "a directory": (str(tmp / "folder.torrent"), "Not a file"),
        "not a torrent": (str(tmp / "notes.txt"), "Not a torrent file"),
        "too large": (str(tmp / "big.torrent"), "too large to open via file association"),
        "remote file uri": ("file://server/share/x.torrent", "Not a local file"),
    }


@pytest.mark.parametrize(
    "case",
    ["no info hash", "short hash", "not a magnet", "missing file", "a directory",
     "not a torrent", "too large", "remote file uri"],
)  # fmt: skip
def test_bad_input_is_refused_clearly_without_launching_anything(
    host_env: HostEnv, tmp_path: Path, case: str
) -> None:
    install_fake_browser(host_env, "xdg-open")
    target, message = bad_inputs(tmp_path)[case]
    result = link(host_env, target, FAKE_BROWSER_DIR=str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.startswith("JSTorrent could not process your link.\n\nReason: ")
    assert message in result.stderr
    assert f"Link: {target}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "argv.json").exists()  # no browser was opened


def test_failure_shows_the_error_dialog(host_env: HostEnv, tmp_path: Path) -> None:
    zenity = host_env.bin_dir / "zenity"
    zenity.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{tmp_path}/zenity.args"\n')
    zenity.chmod(0o755)
    environ = host_env.environ()
    result = subprocess.run(
        [LINK_HANDLER, "magnet:?dn=x"], capture_output=True, text=True, env=environ, timeout=30,
        check=False,
    )  # fmt: skip
    assert result.returncode == 1
    args = (tmp_path / "zenity.args").read_text()
    assert "--error" in args
    assert "--title=JSTorrent Error" in args
    assert "Reason: Not a BitTorrent magnet link" in args
