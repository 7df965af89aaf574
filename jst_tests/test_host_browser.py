"""Which browser started the host (§2.8 step 2) and which extension called (step 3)."""

from __future__ import annotations

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
