"""jst-link-handler against hostile surroundings (issue 12): a .torrent whose name is not
UTF-8 (item 6), and stale profiles whose pid lives again as another program (item 8)."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from jst_tests.hostproc import HostEnv, HostProcess, http, running_host
from jst_tests.test_link_handler import (
    BIN,
    LINK_HANDLER,
    MAGNET,
    TORRENT,
    install_fake_browser,
    link,
    read_frame,
    write_dead_profile,
)


@pytest.fixture
def host(host_env: HostEnv) -> Iterator[HostProcess]:
    with running_host(host_env) as h:
        host_env.wait_for_profile(h.pid)
        yield h


# -- item 6: a .torrent whose name is not UTF-8 -----------------------------------------------


def test_a_torrent_with_a_non_utf8_name_is_delivered_with_replacement(
    host_env: HostEnv, host: HostProcess, tmp_path: Path
) -> None:
    path = os.fsencode(tmp_path) + b"/caf\xe9 \xff.torrent"  # Latin-1, not UTF-8
    with open(path, "wb") as f:
        f.write(TORRENT)
    environ = host_env.environ(JST_LINK_HANDLER_DIALOG="0")
    result = subprocess.run(
        [os.fsencode(LINK_HANDLER), path], capture_output=True, env=environ, timeout=60,
        check=False,
    )  # fmt: skip
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
    assert host.recv() == {
        "event": "TorrentAdded",
        "payload": {
            "name": "caf\ufffd \ufffd.torrent",
            "infohash": "",
            "contentsBase64": base64.b64encode(TORRENT).decode(),
        },
    }
    assert host.proc.poll() is None


def test_a_missing_non_utf8_path_fails_with_one_line_reason(
    host_env: HostEnv, tmp_path: Path
) -> None:
    environ = host_env.environ(JST_LINK_HANDLER_DIALOG="0")
    path = os.fsencode(tmp_path) + b"/gone\xff.torrent"
    result = subprocess.run(
        [os.fsencode(LINK_HANDLER), path], capture_output=True, env=environ, timeout=60,
        check=False,
    )  # fmt: skip
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 1
    assert "Reason: File does not exist:" in stderr
    assert "Traceback" not in stderr
    assert "Logging error" not in stderr


def test_without_a_host_a_non_utf8_path_goes_to_the_browser_as_its_bytes(
    host_env: HostEnv, browser_dir: Path, tmp_path: Path
) -> None:
    browser = install_fake_browser(host_env, "fakebrowser")
    write_dead_profile(host_env, str(browser))
    path = os.fsencode(tmp_path) + b"/caf\xe9.torrent"
    with open(path, "wb") as f:
        f.write(TORRENT)
    environ = host_env.environ(
        JST_LINK_HANDLER_DIALOG="0",
        FAKE_BROWSER_DIR=str(browser_dir),
        FAKE_BROWSER_HOST=str(BIN / "jst-native-host"),
    )
    result = subprocess.run(
        [os.fsencode(LINK_HANDLER), path], capture_output=True, env=environ, timeout=60,
        check=False,
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (0, b"")
    [url] = json.loads((browser_dir / "argv.json").read_text())
    assert url.endswith("#torrent_path=" + quote(path, safe=""))
    assert "caf%E9.torrent" in url
    event = read_frame(browser_dir / "host-stdout")
    assert event["payload"]["name"] == "caf\ufffd.torrent"


def test_the_host_endpoint_takes_a_name_with_a_lone_surrogate(host: HostProcess) -> None:
    profile = host.env.wait_for_profile(host.pid)
    body = json.dumps({"file_name": "bad\udcff.torrent", "contents_base64": "ZDE6YWUx"})
    status, _ = http(
        int(profile["port"]), f"/add-torrent?token={profile['token']}", "POST", body.encode(),
        {"Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 200
    event = host.recv()
    assert event["payload"]["name"] == "bad\ufffd.torrent"
    # A magnet with one is delivered too (escaped in the frame), and the host lives on.
    body = json.dumps({"magnet": "magnet:?xt=urn:btih:" + "a" * 40 + "&dn=\ud800"})
    status, _ = http(
        int(profile["port"]), f"/add-magnet?token={profile['token']}", "POST", body.encode(),
        {"Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 200
    assert host.recv()["payload"]["link"].endswith("&dn=\ud800")
    assert host.proc.poll() is None
    assert host.handshake()["ok"] is True


# -- item 8: a stale profile whose pid is alive again -------------------------------------------


class RogueServer:
    """Whatever now owns a stale profile's port: answers 200 to anything, records bytes."""

    def __init__(self, family: int = socket.AF_INET, path: str | None = None) -> None:
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0) if path is None else path)
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.received = bytearray()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                conn.settimeout(1)
                try:
                    data = conn.recv(65536)
                    self.received += data
                    if data:
                        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def other_program() -> Iterator[int]:
    """A live process that is not a host: the pid a stale profile now names."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def add_stale_profile(host_env: HostEnv, pid: int, port: int, link: str | None) -> None:
    doc = json.loads(host_env.rpc_info.read_text())
    live = doc["profiles"][0]
    stale = dict(live, pid=pid, port=port, token="stale-token", last_used=live["last_used"] + 100)
    stale.pop("jst_link", None)
    if link is not None:
        stale["jst_link"] = link
    doc["profiles"] = [stale, live]  # newest first: tried before the real host
    host_env.rpc_info.write_text(json.dumps(doc))


def test_a_port_owned_by_another_program_gets_neither_token_nor_link(
    host_env: HostEnv, host: HostProcess, other_program: int
) -> None:
    rogue = RogueServer()
    try:
        add_stale_profile(host_env, other_program, rogue.port, None)
        result = link(host_env, MAGNET)
        assert (result.returncode, result.stderr) == (0, "")
    finally:
        rogue.close()
    assert host.recv()["payload"] == {"link": MAGNET}  # the real host got it
    assert b"stale-token" not in rogue.received
    assert b"btih" not in rogue.received
    assert rogue.received == b""
    log = (host_env.rpc_info.parent / "jst-link-handler.log").read_text()
    assert f"skipping host pid {other_program}" in log


@pytest.mark.parametrize("directory_mode", [0o700, 0o755], ids=["private-dir", "open-dir"])
def test_a_unix_socket_not_served_by_the_host_gets_nothing(
    host_env: HostEnv, host: HostProcess, other_program: int, tmp_path: Path, directory_mode: int
) -> None:
    directory = tmp_path / "rogue-dir"
    directory.mkdir(mode=directory_mode)
    directory.chmod(directory_mode)
    path = directory / "link"
    rogue = RogueServer(socket.AF_UNIX, str(path))
    try:
        # The profile names the other program's pid, a dead TCP port, and the rogue socket.
        add_stale_profile(host_env, other_program, 9, f"unix:{path}")
        result = link(host_env, MAGNET)
        assert (result.returncode, result.stderr) == (0, "")
    finally:
        rogue.close()
    assert host.recv()["payload"] == {"link": MAGNET}
    assert rogue.received == b""
    log = (host_env.rpc_info.parent / "jst-link-handler.log").read_text()
    assert f"skipping host pid {other_program}" in log
