"""A real Chromium with an MV3 extension drives jst as the JSTorrent extension does.

Runs inside a private network namespace (see ``jst_tests/test_e2e.py``). Each test starts
Chromium with a fresh profile whose Native Messaging manifest ``jst install`` wrote, and
calls the extension's service worker (``extension/sw.js``) step by step.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import psutil
import pytest
from playwright.sync_api import BrowserContext, Playwright, Worker, sync_playwright

from jst.host.roots import root_key
from jst_tests.e2e.browser import CHROMIUM, install_manifest, launch_args
from jst_tests.hostproc import HostEnv, gone_within


@attrs.define
class Setup(HostEnv):
    """A host environment whose install already has one download root."""

    @property
    def root(self) -> Path:
        return self.base / "Downloads"

    @property
    def key(self) -> str:
        return root_key(str(self.root))

    def host_pids(self) -> list[int]:
        return [p["pid"] for p in self.profiles() if p["install_id"] == self.install_id]


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    s = Setup(tmp_path)
    s.root.mkdir()
    # The extension's saved install already has a download root (§3.3: the handshake
    # adopts the roots of the profile with the same install id).
    profile = {
        "extension_id": None, "install_id": s.install_id, "pid": 1, "port": 1, "token": "t",
        "started": 1, "last_used": 1, "browser": {"name": "chromium", "binary": CHROMIUM},
        "download_roots": [{"key": s.key, "path": str(s.root), "display_name": "Downloads",
                            "removable": False, "last_stat_ok": True, "last_checked": 1}],
    }  # fmt: skip
    s.rpc_info.parent.mkdir(parents=True)
    s.rpc_info.write_text(json.dumps({"version": 1, "profiles": [profile]}))
    install_manifest(tmp_path / "profile", tmp_path / "home")
    return s


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@attrs.define
class Browser:
    context: BrowserContext
    worker: Worker

    def call(self, expression: str, arg: Any = None) -> Any:
        return self.worker.evaluate(expression, arg)


@pytest.fixture
def browser(playwright: Playwright, setup: Setup) -> Iterator[Browser]:
    context = playwright.chromium.launch_persistent_context(
        str(setup.base / "profile"),
        executable_path=CHROMIUM,
        # Chromium's own new headless mode, asked for explicitly (Playwright's headless
        # switch is left off); JST_E2E_HEADED=1 shows the window (see the README).
        headless=False,
        args=launch_args(headed=os.environ.get("JST_E2E_HEADED") == "1"),
        ignore_default_args=["--disable-extensions"],
        env={**os.environ, "JSTORRENT_CONFIG_DIR": str(setup.config_dir),
             "TMPDIR": str(setup.base)},
    )  # fmt: skip
    try:
        workers = context.service_workers
        worker = workers[0] if workers else context.wait_for_event("serviceworker", timeout=20_000)
        yield Browser(context, worker)
    finally:
        context.close()


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        if isinstance(self.request, tuple):  # UDP: (data, socket)
            data, sock = self.request
            sock.sendto(data, self.client_address)
            return
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def echo() -> Iterator[tuple[int, int]]:
    """(TCP port, UDP port) of echo servers on 127.0.0.1."""
    tcp = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    udp = socketserver.UDPServer(("127.0.0.1", 0), _Echo)
    tcp.daemon_threads = True
    for server in (tcp, udp):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield tcp.server_address[1], udp.server_address[1]
    finally:
        for server in (tcp, udp):
            server.shutdown()
            server.server_close()


def daemon_pid(host_pid: int) -> int:
    [child] = [c for c in psutil.Process(host_pid).children() if "daemon" in " ".join(c.cmdline())]
    return child.pid


def test_the_extension_uses_jst_like_jstorrent(
    browser: Browser, setup: Setup, echo: tuple[int, int]
) -> None:
    tcp_port, udp_port = echo
    info = browser.call("id => self.connect(id)", setup.install_id)
    assert [r["key"] for r in info["roots"]] == [setup.key]
    assert browser.call("() => self.health()") == {"status": 200, "body": "ok"}
    assert browser.call("() => self.openIo()") is True
    assert browser.call("([p, m]) => self.tcpEcho(p, m, 7)", [tcp_port, "hello jst"]) == {
        "connected": True,
        "echoed": "hello jst",
    }

    listening = browser.call("() => self.listen(20)")
    assert listening["status"] == 0
    with socket.create_connection(("127.0.0.1", listening["port"]), timeout=10) as conn:
        conn.sendall(b"ping")
        accepted = browser.call("() => self.acceptAndEcho(20, 4)")
        assert accepted["data"] == "ping"
        assert accepted["socketId"] >= 0x8000_0000  # daemon-assigned ids never collide
        assert conn.recv(100) == b"pong:ping"

    udp = browser.call("([p, m]) => self.udpEcho(p, m, 30)", [udp_port, "udp hello"])
    assert udp == {"bound": True, "fromPort": udp_port, "from": "127.0.0.1", "data": "udp hello"}

    files = browser.call(
        "([k, p, t]) => self.files(k, p, t)", [setup.key, "Show/ep1.txt", "é" * 1000]
    )
    assert (files["writeStatus"], files["readStatus"]) == (200, 200)
    assert files["readText"] == "é" * 1000
    assert files["stat"]["size"] == 2000
    assert files["stat"]["is_file"] is True
    assert files["daemonSha1"] == files["browserSha1"]
    assert (setup.root / "Show/ep1.txt").read_text() == "é" * 1000

    one_shot = browser.call(
        "() => self.oneShot({op: 'deleteDownloadRoot', key: 'nope', id: 'one'})"
    )
    assert one_shot == {"id": "one", "ok": False, "error": "Root not found: nope", "type": "Empty"}
    state = browser.call("() => self.state")
    assert (state["disconnected"], state["healthFailed"]) == (False, 0)


def test_disconnecting_the_port_ends_host_and_daemon(browser: Browser, setup: Setup) -> None:
    browser.call("id => self.connect(id)", setup.install_id)
    [host] = setup.host_pids()
    daemon = daemon_pid(host)
    browser.call("() => self.disconnect()")
    assert gone_within(host, 2.0)
    assert gone_within(daemon, 2.0)


def test_closing_the_browser_ends_host_and_daemon(
    playwright: Playwright, browser: Browser, setup: Setup
) -> None:
    browser.call("id => self.connect(id)", setup.install_id)
    [host] = setup.host_pids()
    daemon = daemon_pid(host)
    browser.context.close()
    assert gone_within(host, 3.0)
    assert gone_within(daemon, 3.0)


def test_a_killed_daemon_heals_while_the_extension_is_connected(
    browser: Browser, setup: Setup, echo: tuple[int, int]
) -> None:
    tcp_port, _ = echo
    browser.call("id => self.connect(id)", setup.install_id)
    assert browser.call("() => self.openIo()") is True
    assert browser.call("([p, m]) => self.tcpEcho(p, m, 1)", [tcp_port, "before"])["echoed"] == (
        "before"
    )
    [host] = setup.host_pids()
    first = daemon_pid(host)
    os.kill(first, signal.SIGKILL)
    assert gone_within(first, 1.0)
    # The health poll does not notice: the port keeps accepting while the host restarts.
    assert browser.call("() => self.health()")["status"] == 200
    assert daemon_pid(host) != first
    # Only the WebSocket has to reconnect, and sockets work again.
    assert browser.call("() => self.openIo()") is True
    assert browser.call("([p, m]) => self.tcpEcho(p, m, 2)", [tcp_port, "after"])["echoed"] == (
        "after"
    )
    time.sleep(5.5)  # at least one poll of the extension's own 5 s health timer
    state = browser.call("() => self.state")
    assert state["disconnected"] is False
    assert state["healthOk"] >= 1
    assert state["healthFailed"] == 0
