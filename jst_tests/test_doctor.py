"""``jst doctor`` on a healthy setup and on each way a setup breaks."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from jst.install import manifest
from jst_tests.test_install import jst

CHROME_MANIFEST = f".config/google-chrome/NativeMessagingHosts/{manifest.FILE_NAME}"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    (home / ".config/google-chrome").mkdir(parents=True)
    assert jst(home, "install").returncode == 0
    return home


def rows(output: str) -> dict[str, tuple[str, str]]:
    """check name -> (status, rest of the line), from doctor's table."""
    table: dict[str, tuple[str, str]] = {}
    for line in output.splitlines():
        status, _, rest = line.partition("  ")
        if status.strip() in ("ok", "FAIL", "warn"):
            check, _, detail = rest.strip().partition("  ")
            table[check.strip()] = (status.strip(), detail.strip())
    return table


def test_healthy_setup_passes(home: Path) -> None:
    result = jst(home, "doctor")
    assert result.returncode == 0, result.stdout
    table = rows(result.stdout)
    assert table["Google Chrome: manifest"][0] == "ok"
    status, detail = table["Google Chrome: host starts"]
    assert status == "ok"
    assert "handshake in" in detail
    assert "io-daemon answers" in detail
    assert table["handler: x-scheme-handler/magnet"][0] == "ok"
    assert table["handler: application/x-bittorrent"][0] == "ok"
    assert "FAIL" not in result.stdout


def edit_manifest(change: Callable[[dict[str, object]], None]) -> Callable[[Path], None]:
    def apply(home: Path) -> None:
        path = home / CHROME_MANIFEST
        doc = json.loads(path.read_text())
        change(doc)
        path.write_text(json.dumps(doc))

    return apply


def script_host(body: str) -> Callable[[Path], None]:
    def apply(home: Path) -> None:
        script = home / "fake-host"
        script.write_text("#!/bin/sh\n" + body)
        script.chmod(0o755)
        edit_manifest(lambda doc: doc.__setitem__("path", str(script)))(home)

    return apply


def overwrite(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def not_executable(home: Path) -> None:
    script = home / "plain-file"
    script.write_text("")
    edit_manifest(lambda doc: doc.__setitem__("path", str(script)))(home)


BROKEN: dict[str, tuple[Callable[[Path], object], str, str]] = {
    "missing manifest": (
        lambda home: (home / CHROME_MANIFEST).unlink(),
        "Google Chrome: manifest",
        "missing",
    ),
    "not json": (
        lambda home: overwrite(home / CHROME_MANIFEST, b"{oops"),
        "Google Chrome: manifest",
        "not valid JSON",
    ),
    "relative path": (
        edit_manifest(lambda doc: doc.__setitem__("path", "bin/jst-native-host")),
        "Google Chrome: manifest",
        "must be an absolute path",
    ),
    "not executable": (not_executable, "Google Chrome: manifest", "is not executable"),
    "no trailing slash": (
        edit_manifest(
            lambda doc: doc.__setitem__(
                "allowed_origins", ["chrome-extension://dbokmlpefliilbjldladbimlcfgbolhk"]
            )
        ),
        "Google Chrome: manifest",
        "trailing /",
    ),
    "host never answers": (
        script_host("sleep 30\n"),
        "Google Chrome: host starts",
        "no answer to a handshake within 2 s",
    ),
    "host prints on stdout": (
        script_host("echo 'Loading settings...'; sleep 30\n"),
        "Google Chrome: host starts",
        "something else is on its stdout",
    ),
    "host crashes": (
        script_host("echo 'boom' >&2; exit 3\n"),
        "Google Chrome: host starts",
        "exited without answering",
    ),
    "handlers not registered": (
        lambda home: (home / ".config/mimeapps.list").unlink(),
        "handler: x-scheme-handler/magnet",
        "opens with nothing",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_each_broken_setup_fails_with_a_fix(home: Path, case: str) -> None:
    breaks, check, detail = BROKEN[case]
    breaks(home)
    started = time.monotonic()
    result = jst(home, "doctor")
    assert time.monotonic() - started < 15
    assert result.returncode == 1, result.stdout
    status, text = rows(result.stdout)[check]
    assert status == "FAIL"
    assert detail in text
    lines = result.stdout.splitlines()
    failing = next(i for i, line in enumerate(lines) if line.startswith("FAIL") and check in line)
    assert "fix:" in lines[failing + 1]


def test_no_browser_at_all_fails(tmp_path: Path) -> None:
    result = jst(tmp_path, "doctor")
    assert result.returncode == 1
    assert rows(result.stdout)["browsers"][0] == "FAIL"
