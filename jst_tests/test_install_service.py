"""``jst install --service`` / ``jst uninstall`` of the per-user unit, in a scratch HOME."""

from __future__ import annotations

import plistlib
import shutil
import subprocess
from pathlib import Path

import pytest

from jst.install import service_unit
from jst_tests.test_install import BIN, REPO, jst, tree

UNIT = ".config/systemd/user/jst.service"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    (home / ".config/google-chrome").mkdir(parents=True)
    return home


def fake_systemctl(home: Path) -> tuple[str, Path]:
    """A PATH whose only systemctl records its arguments."""
    bin_dir = home.parent / "fake-bin"
    bin_dir.mkdir()
    log = home.parent / "systemctl.log"
    script = bin_dir / "systemctl"
    script.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\n')
    script.chmod(0o755)
    return str(bin_dir), log


def test_contrib_templates_are_what_install_writes() -> None:
    assert (REPO / "contrib/systemd/jst.service").read_text() == service_unit.UNIT_TEMPLATE
    contrib = plistlib.loads((REPO / "contrib/launchd/com.jstorrent.jst.plist").read_bytes())
    rendered = plistlib.loads(service_unit.render_agent("/usr/local/bin/jst"))
    assert contrib == rendered


def test_install_service_writes_the_unit_and_uninstall_removes_it(home: Path) -> None:
    before = tree(home)
    result = jst(home, "install", "--service")
    assert result.returncode == 0, result.stderr
    unit = home / UNIT
    assert unit.read_text() == service_unit.render_unit(str(BIN / "jst"))
    assert f"ExecStart={BIN / 'jst'} service run" in unit.read_text().splitlines()
    assert "systemctl --user enable --now jst.service" in result.stdout  # no systemctl here
    assert jst(home, "uninstall").returncode == 0
    assert not unit.exists()
    assert tree(home) == before


def test_install_service_enables_and_uninstall_disables(home: Path) -> None:
    path, log = fake_systemctl(home)
    result = jst(home, "install", "--service", path=path)
    assert result.returncode == 0, result.stderr
    assert "enabled    jst.service" in result.stdout
    assert jst(home, "uninstall", path=path).returncode == 0
    assert log.read_text().splitlines() == [
        "--user daemon-reload",
        "--user enable --now jst.service",
        "--user disable --now jst.service",
    ]
    assert not (home / UNIT).exists()


def test_plain_install_writes_no_unit(home: Path) -> None:
    assert jst(home, "install").returncode == 0
    assert not (home / UNIT).exists()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = tmp_path / "jst.service"
    unit.write_text(service_unit.render_unit(str(BIN / "jst")))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    problems = [line for line in result.stderr.splitlines() if "jst.service" in line]
    assert problems == [], result.stderr


def test_doctor_reports_the_service(home: Path) -> None:
    assert jst(home, "install", "--service").returncode == 0
    result = jst(home, "doctor")
    lines = [line for line in result.stdout.splitlines() if "  service  " in line]
    assert len(lines) == 1
    assert lines[0].startswith("FAIL")  # the unit is there, no service answers
    assert "not reachable" in lines[0]
