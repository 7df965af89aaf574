"""Which browser started the host (§2.8 step 2) and which extension called (step 3)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jst.host import browser
from jst.host.browser import ProcessInfo, choose_browser, extension_id_from_argv


def test_browser_is_found_above_wrappers_and_shells() -> None:
    ancestors = [
        ProcessInfo("sh", "/usr/bin/dash"),
        ProcessInfo("python3", "/opt/jstorrent/bin/python3"),  # our wrapper, by path
        ProcessInfo("Native-Host-Wrapper", "/x"),  # our wrapper, by name
        ProcessInfo("chrome", "/opt/google/chrome/chrome"),
        ProcessInfo("systemd", "/usr/lib/systemd/systemd"),
    ]
    assert choose_browser(ancestors) == ("chrome", "/opt/google/chrome/chrome")


def test_without_a_browser_the_first_real_executable_wins() -> None:
    ancestors = [ProcessInfo("weird", ""), ProcessInfo("bash", "/bin/bash")]
    assert choose_browser(ancestors) == ("bash", "/bin/bash")
    assert choose_browser([]) == ("Unknown", "")


def test_extension_id_comes_from_the_origin_argument() -> None:
    argv = ["chrome-extension://dbokmlpefliilbjldladbimlcfgbolhk/", "--parent-window=0"]
    assert extension_id_from_argv(argv) == "dbokmlpefliilbjldladbimlcfgbolhk"
    assert extension_id_from_argv(["--parent-window=0"]) is None


def test_linux_proc_walk_sees_what_psutil_sees(tmp_path: Path) -> None:
    """The host reads /proc itself on Linux (no psutil import at start, issue 17): the
    ancestors it finds, long names included, are the ones psutil reports."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the /proc walk is Linux only")
    import psutil

    shell = tmp_path / "a-shell-with-a-long-name"  # the kernel keeps 15 bytes of it
    shell.symlink_to(shutil.which("sh") or "/bin/sh")
    proc = subprocess.Popen([str(shell), "-c", "sleep 30; true"])
    try:
        deadline = time.monotonic() + 10
        children: list[psutil.Process] = []
        while not children and time.monotonic() < deadline:
            children = psutil.Process(proc.pid).children()
            time.sleep(0.01)
        assert children, "the shell started no child"
        leaf = children[0].pid
        found = browser._proc_ancestors(browser.MAX_ANCESTORS, leaf)
        assert found == browser._psutil_ancestors(browser.MAX_ANCESTORS, leaf)
        assert found[0].name == "a-shell-with-a-long-name"
        assert found[2:] == browser.ancestors(browser.MAX_ANCESTORS)[: len(found) - 2]
    finally:
        proc.kill()
        proc.wait()
