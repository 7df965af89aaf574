"""A real Chromium with the service-mode test extension (SERVICE.md §2, §5).

The extension finds jst's persistent io-daemon with one-shot Native Messaging, caches
the endpoint in chrome.storage.local and talks to the daemon directly. The test stops
its service worker (CDP ``ServiceWorker.stopAllWorkers``) and wakes it, restarts the
browser on the same profile, restarts the service on another port, and makes the
service unstartable, counting the native messages the extension sends each time.
Runs inside the private network namespace of ``jst_tests/test_e2e.py``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from playwright.sync_api import BrowserContext, Page, Playwright, sync_playwright

from jst_tests.e2e.browser import CHROMIUM, FLAGS, extension_id
from jst_tests.hostproc import gone_within
from jst_tests.serviceproc import ServiceEnv

EXTENSION = Path(__file__).parent / "extension_service"
EXTENSION_ID = extension_id(EXTENSION)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[ServiceEnv]:
    service_env = ServiceEnv(tmp_path)
    service_env.setup()
    home = tmp_path / "home"
    home.mkdir()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "JST"))}
    subprocess.run(
        [sys.executable, "-m", "jst", "install", "--user-data-dir", str(tmp_path / "profile"),
         "--extension-id", EXTENSION_ID],
        env={**clean, "HOME": str(home), "PATH": str(home)}, check=True, capture_output=True,
        timeout=60,
    )  # fmt: skip
    yield service_env
    service_env.cleanup()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@attrs.define
class Chromium:
    """The browser, and an extension page (wake.html) that calls into the service worker
    by message: Playwright's Worker handle does not follow a restarted worker."""

    playwright: Playwright
    env: ServiceEnv
    context: BrowserContext | None = None
    page: Page | None = None

    def launch(self) -> None:
        self.context = self.playwright.chromium.launch_persistent_context(
            str(self.env.base / "profile"),
            executable_path=CHROMIUM,
            headless=False,
            args=[*FLAGS, "--headless=new", f"--disable-extensions-except={EXTENSION}",
                  f"--load-extension={EXTENSION}"],
            ignore_default_args=["--disable-extensions"],
            env={**os.environ, **self.env.environ(), "TMPDIR": str(self.env.base)},
        )  # fmt: skip
        self.page = self.context.new_page()
        self.page.goto(f"chrome-extension://{EXTENSION_ID}/wake.html")

    def call(self, name: str, *args: Any) -> Any:
        assert self.page is not None
        reply = self.page.evaluate("([n, a]) => self.callWorker(n, a)", [name, list(args)])
        assert reply["ok"], reply
        return reply["value"]

    def restart_worker(self) -> None:
        """Stop every service worker through CDP and wait until ours has stopped."""
        assert self.context is not None
        assert self.page is not None
        cdp = self.context.new_cdp_session(self.page)
        statuses: list[str] = []

        def versions(event: dict[str, Any]) -> None:
            for version in event["versions"]:
                if EXTENSION_ID in version.get("scriptURL", ""):
                    statuses.append(version["runningStatus"])

        cdp.on("ServiceWorker.workerVersionUpdated", versions)
        cdp.send("ServiceWorker.enable")
        cdp.send("ServiceWorker.stopAllWorkers")
        for _ in range(200):  # bounded: 10 s
            if statuses and statuses[-1] == "stopped":
                break
            self.page.wait_for_timeout(50)
        assert statuses[-1:] == ["stopped"], statuses
        cdp.detach()

    def close(self) -> None:
        if self.context is not None:
            self.context.close()
            self.context = None


@pytest.fixture
def chromium(playwright: Playwright, env: ServiceEnv) -> Iterator[Chromium]:
    browser = Chromium(playwright, env)
    browser.launch()
    try:
        yield browser
    finally:
        browser.close()


def test_service_mode_survives_worker_and_browser_restarts(
    chromium: Chromium, env: ServiceEnv
) -> None:
    first = chromium.call("start", env.install_id)
    assert (first["used"], first["nativeMessages"], first["roots"]) == ("native", 1, [])
    assert chromium.call("ioWorks") is True
    [daemon] = env.daemons()

    # A service-worker restart: the cache is enough, no native message.
    chromium.restart_worker()
    assert chromium.call("hasControl") is False  # a fresh worker: nothing kept in memory
    again = chromium.call("start", env.install_id)
    assert (again["used"], again["nativeMessages"], again["port"]) == ("cache", 1, first["port"])
    assert [d.pid for d in env.daemons()] == [daemon.pid]

    # A browser restart on the same profile: the same daemon, pid and port.
    chromium.close()
    chromium.launch()
    after = chromium.call("start", env.install_id)
    assert (after["used"], after["nativeMessages"], after["port"]) == ("cache", 1, first["port"])
    assert [d.pid for d in env.daemons()] == [daemon.pid]
    assert chromium.call("ioWorks") is True

    # The service restarts and its old port is taken: exactly one native message.
    [service] = env.services()
    assert env.cli("stop").returncode == 0
    assert gone_within(service.pid, 3)
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT
        squatter.bind(("127.0.0.1", first["port"]))
        squatter.listen()
        moved = chromium.call("start", env.install_id)
    assert (moved["used"], moved["nativeMessages"]) == ("native", 2)
    assert moved["port"] != first["port"]
    assert chromium.call("ioWorks") is True


def test_no_service_startable_means_backing_off(chromium: Chromium, env: ServiceEnv) -> None:
    # The runtime directory cannot be made private: every one-shot answer is an error.
    env.runtime.joinpath("jstorrent-native").write_text("not a directory")
    result = chromium.call("startWithBackoff", env.install_id, 8000)
    assert result["ok"] is False
    assert "runtime directory" in result["lastError"]
    # 1, 2, 4 s apart: at most 4 asks in 8 s (a loop would make hundreds).
    assert 1 <= result["nativeMessages"] <= 4
    assert env.services() == []
