"""Where a host without ``$XDG_RUNTIME_DIR`` makes its private directory: where
``tempfile.gettempdir()`` would, found without importing tempfile (issue 17)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jst.host.control_server import temp_dir


def tempfile_answer(env: dict[str, str], cwd: Path) -> str:
    code = "import tempfile; print(tempfile.gettempdir())"
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True,
        timeout=30, check=True,
    )  # fmt: skip
    return result.stdout.strip()


@pytest.mark.skipif(sys.platform == "win32", reason="the shortcut is for Unix")
@pytest.mark.parametrize(
    "setting", ["writable", "missing", "relative", "a file", "unset", "TEMP only"]
)
def test_the_same_directory_as_tempfile(
    setting: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("TMPDIR", "TEMP", "TMP")}
    (tmp_path / "sub").mkdir()
    (tmp_path / "file").write_text("")
    value = {
        "writable": str(tmp_path),
        "missing": str(tmp_path / "nowhere"),
        "relative": "sub",
        "a file": str(tmp_path / "file"),
    }.get(setting)
    if value is not None:
        env["TMPDIR"] = value
    if setting == "TEMP only":
        env["TEMP"] = str(tmp_path / "sub")
    monkeypatch.chdir(tmp_path)
    for name in ("TMPDIR", "TEMP", "TMP"):
        monkeypatch.delenv(name, raising=False)
        if name in env:
            monkeypatch.setenv(name, env[name])
    assert temp_dir() == tempfile_answer(env, tmp_path)
