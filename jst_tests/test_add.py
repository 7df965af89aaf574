"""``jst add``: where each link went or why not, ``--wait``, ``--launch``, exit statuses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from jst_tests.hostproc import HostEnv, HostProcess, running_host
from jst_tests.test_link_handler import install_fake_browser, read_frame, write_dead_profile

JST = str(Path(sys.executable).parent / "jst")
MAGNET = "magnet:?xt=urn:btih:" + "e" * 40 + "&dn=add"
TORRENT = b"d8:announce9:udp://x:14:infod6:lengthi1e4:name1:a12:piece lengthi16384e6:pieces0:ee"


def add(env: HostEnv, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [JST, "add", *args], capture_output=True, text=True, timeout=60, check=False,
        env=env.environ(JST_LINK_HANDLER_DIALOG="0", **extra),
    )  # fmt: skip


@pytest.fixture
def host(host_env: HostEnv) -> Iterator[HostProcess]:
    with running_host(host_env) as h:
        host_env.wait_for_profile(h.pid)
        yield h


def test_links_and_files_are_delivered_and_reported(
    host_env: HostEnv, host: HostProcess, tmp_path: Path
) -> None:
    path = tmp_path / "Show.torrent"
    path.write_bytes(TORRENT)
    result = add(host_env, MAGNET, str(path), path.as_uri())
    assert result.returncode == 0, result.stderr
    browser = host_env.profiles()[0]["browser"]["name"]
    assert result.stdout.splitlines() == [
        f"delivered to {browser} (pid {host.pid}): {MAGNET}",
        f"delivered to {browser} (pid {host.pid}): {path}",
        f"delivered to {browser} (pid {host.pid}): {path.as_uri()}",
    ]
    assert host.recv() == {"event": "MagnetAdded", "payload": {"link": MAGNET}}
    assert host.recv()["payload"]["name"] == "Show.torrent"
    assert host.recv()["payload"]["name"] == "Show.torrent"


def test_a_bad_link_fails_alone(host_env: HostEnv, host: HostProcess, tmp_path: Path) -> None:
    missing = tmp_path / "missing.torrent"
    result = add(host_env, "https://example.invalid/a.torrent", MAGNET, str(missing), "--json")
    assert result.returncode == 1
    doc = json.loads(result.stdout)
    assert [(d["delivered"], d["reason"]) for d in doc] == [
        (False, "Not a magnet link, a .torrent file or a file:// URL"),
        (True, None),
        (False, f"File does not exist: {missing}"),
    ]
    assert doc[1]["host_pid"] == host.pid
    assert host.recv()["payload"] == {"link": MAGNET}
    assert host.no_frame_within(0.5)


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("magnet:?dn=nohash", "Not a BitTorrent magnet link: it has no info hash"),
        ("magnet:x", "Not a magnet link (it must start with 'magnet:?')"),
        ("/nonexistent/file.torrent", "File does not exist: /nonexistent/file.torrent"),
        ("ftp://example.invalid/x", "Not a magnet link, a .torrent file or a file:// URL"),
    ],
)
def test_bad_input_is_refused_with_the_reason(host_env: HostEnv, target: str, reason: str) -> None:
    install_fake_browser(host_env, "xdg-open")
    result = add(host_env, target, FAKE_BROWSER_DIR=str(host_env.base))
    assert result.returncode == 1
    assert result.stdout == ""
    assert f"not delivered: {target}" in result.stderr
    assert reason in result.stderr
    assert not (host_env.base / "argv.json").exists()  # nothing was opened


def test_no_host_running_fails_at_once_and_opens_nothing(host_env: HostEnv) -> None:
    browser_dir = host_env.base / "browser"
    browser_dir.mkdir()
    browser = install_fake_browser(host_env, "fakebrowser")
    install_fake_browser(host_env, "xdg-open")
    write_dead_profile(host_env, str(browser))  # a browser jst could launch: it must not
    result = add(host_env, MAGNET, FAKE_BROWSER_DIR=str(browser_dir))
    assert result.returncode == 1
    assert "reason: No JSTorrent host is running" in result.stderr
    assert not (browser_dir / "argv.json").exists()


def test_wait_delivers_to_a_host_that_starts_later(host_env: HostEnv) -> None:
    proc = subprocess.Popen(
        [JST, "add", "--wait", "30", MAGNET], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=host_env.environ(),
    )  # fmt: skip
    try:
        with running_host(host_env) as host:
            out, err = proc.communicate(timeout=40)
            assert proc.returncode == 0, err
            assert out.startswith("delivered to ")
            assert f"(pid {host.pid})" in out
            assert host.recv() == {"event": "MagnetAdded", "payload": {"link": MAGNET}}
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_launch_opens_the_browser_which_starts_a_host(host_env: HostEnv, browser_dir: Path) -> None:
    browser = install_fake_browser(host_env, "fakebrowser")
    write_dead_profile(host_env, str(browser))
    result = add(
        host_env, "--launch", "--wait", "20", MAGNET, FAKE_BROWSER_DIR=str(browser_dir),
        FAKE_BROWSER_HOST=str(Path(sys.executable).parent / "jst-native-host"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("delivered to ")
    argv = json.loads((browser_dir / "argv.json").read_text())
    assert argv == [f"http://127.0.0.1:9/launch#magnet={quote(MAGNET, safe='')}"]
    assert read_frame(browser_dir / "host-stdout") == {
        "event": "MagnetAdded",
        "payload": {"link": MAGNET},
    }


def test_usage_errors_exit_2(host_env: HostEnv) -> None:
    assert add(host_env).returncode == 2
    assert add(host_env, "--wait", "soon", MAGNET).returncode == 2
    assert add(host_env, "--wait", "-1", MAGNET).returncode == 2


def test_a_path_that_is_not_utf8_is_reported_without_a_traceback(
    host_env: HostEnv, tmp_path: Path
) -> None:
    missing = os.fsencode(tmp_path) + b"/\xff.torrent"
    result = subprocess.run(
        [os.fsencode(JST), b"add", missing], capture_output=True, timeout=60, check=False,
        env=host_env.environ(),
    )  # fmt: skip
    assert result.returncode == 1
    assert b"Traceback" not in result.stderr
    assert b"reason: File does not exist: " in result.stderr
    assert b"\\udcff.torrent" in result.stderr  # the undecodable byte, shown escaped
