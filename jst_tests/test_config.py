"""Config dir resolution (§3.1) and the env-file superset parser (§3.4)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jst import config


def test_override_is_used_verbatim(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JSTORRENT_CONFIG_DIR", str(tmp_path / "cfg"))
    assert config.app_dir() == tmp_path / "cfg" / "jstorrent-native"
    assert config.rpc_info_path() == tmp_path / "cfg" / "jstorrent-native" / "rpc-info.json"


def test_linux_uses_absolute_xdg_config_home_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("JSTORRENT_CONFIG_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config.app_dir() == tmp_path / "xdg" / "jstorrent-native"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/dir")
    assert config.app_dir() == tmp_path / ".config" / "jstorrent-native"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert config.app_dir() == tmp_path / ".config" / "jstorrent-native"


def test_env_file_accepts_every_original_syntax() -> None:
    text = (
        "# comment\n"
        "\n"
        "  LOGFILE=true  \n"
        "DEV_ORIGINS = http://a:1, http://b:2\n"
        "LAUNCH_URL=https://x.test/launch?a=b=c\n"
        "LAUNCH_URL=https://ignored.test\n"
        "no equals sign here\n"
    )
    values = config.parse_env_file(text)
    assert values == {
        "LOGFILE": "true",
        "DEV_ORIGINS": "http://a:1, http://b:2",
        "LAUNCH_URL": "https://x.test/launch?a=b=c",
    }


def test_env_setting_prefers_the_config_dir_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("JSTORRENT_CONFIG_DIR", str(tmp_path / "cfg"))
    exe_dir = tmp_path / "bin"
    exe_dir.mkdir()
    (exe_dir / "jstorrent-native.env").write_text(
        "LAUNCH_URL=http://exe\nDEV_ORIGINS=http://exe-only\n"
    )
    assert config.env_setting("LAUNCH_URL", exe_dir) == "http://exe"
    config.app_dir().mkdir(parents=True)
    (config.app_dir() / "jstorrent-native.env").write_text("LAUNCH_URL=http://cfg\n")
    assert config.env_setting("LAUNCH_URL", exe_dir) == "http://cfg"
    assert config.env_setting("DEV_ORIGINS", exe_dir) == "http://exe-only"
    assert config.env_setting("MISSING", exe_dir) is None


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs")
def test_an_env_file_that_is_not_a_regular_file_is_empty_at_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The host reads it before answering Chrome: a FIFO (or a directory) in its place
    # must not hold the handshake.
    monkeypatch.setenv("JSTORRENT_CONFIG_DIR", str(tmp_path / "cfg"))
    config.app_dir().mkdir(parents=True)
    os.mkfifo(config.app_dir() / "jstorrent-native.env")
    (tmp_path / "bin" / "jstorrent-native.env").mkdir(parents=True)
    assert config.env_setting("DEV_ORIGINS", tmp_path / "bin") is None
