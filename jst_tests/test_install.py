"""``jst install`` / ``jst uninstall`` into a temporary HOME, for every browser layout."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from jst.install import browsers, manifest, xdg

JST = [sys.executable, "-m", "jst"]
BIN = Path(sys.executable).parent
HOST = str(BIN / "jst-native-host")
LINK = str(BIN / "jst-link-handler")
REPO = Path(__file__).resolve().parent.parent


def jst(home: Path, *args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "JST"))}
    env["HOME"] = str(home)
    # By default no xdg-mime (whether the machine has one or not): mimeapps.list is
    # then written directly, and the test knows exactly what to expect.
    empty = home.parent / "empty-path"
    empty.mkdir(exist_ok=True)
    env["PATH"] = path if path is not None else str(empty)
    return subprocess.run(
        [*JST, *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def tree(home: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under ``home``: (mode, content for files)."""
    out: dict[str, tuple[int, bytes | None]] = {}
    for path in sorted(home.rglob("*")):
        mode = stat.S_IMODE(path.lstat().st_mode)
        out[str(path.relative_to(home))] = (mode, path.read_bytes() if path.is_file() else None)
    return out


ALL_PRESENCE = [layout.presence for layout in browsers.user_layouts(Path("/H"), "linux")]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    for presence in ALL_PRESENCE:
        (home / presence.relative_to("/H")).mkdir(parents=True, exist_ok=True)
    return home


def test_install_writes_each_browsers_manifest_and_uninstall_restores_home(home: Path) -> None:
    # Things that are not ours and must survive both commands.
    foreign = home / ".config/google-chrome/NativeMessagingHosts/org.other.host.json"
    foreign.parent.mkdir(parents=True)
    foreign.write_text("{}")
    (home / ".config/mimeapps.list").write_text(
        "[Default Applications]\ntext/html=firefox.desktop;\n"
    )
    before = tree(home)

    result = jst(home, "install")
    assert result.returncode == 0, result.stderr
    after = tree(home)
    added = sorted(set(after) - set(before))
    chrome_family = {
        ".config/google-chrome", ".config/chromium", ".config/BraveSoftware/Brave-Browser",
        ".config/microsoft-edge", ".config/vivaldi", "snap/chromium/common/chromium",
    }  # fmt: skip
    for base in chrome_family:
        name = f"{base}/NativeMessagingHosts/{manifest.FILE_NAME}"
        assert name in added
        assert after[name][0] == 0o644
        assert json.loads(after[name][1] or b"") == manifest.build("chrome", HOST)
    firefox = f".mozilla/native-messaging-hosts/{manifest.FILE_NAME}"
    assert json.loads(after[firefox][1] or b"") == manifest.build("firefox", HOST)
    assert json.loads(after[firefox][1] or b"")["allowed_extensions"]
    flatpak = ".var/app/com.google.Chrome"
    wrapper = f"{flatpak}/data/jstorrent-native/jst-native-host"
    assert after[wrapper] == (
        0o755,
        f'#!/bin/sh\nexec flatpak-spawn --host "{HOST}" "$@"\n'.encode(),
    )
    flatpak_manifest = json.loads(
        after[f"{flatpak}/config/google-chrome/NativeMessagingHosts/{manifest.FILE_NAME}"][1] or b""
    )
    assert flatpak_manifest["path"] == str(home / wrapper)
    assert "flatpak override --user --talk-name=org.freedesktop.Flatpak" in result.stdout
    desktop = ".local/share/applications/jst-link-handler.desktop"
    assert after[desktop] == (0o644, xdg.desktop_entry(LINK).encode())
    mimeapps = (after[".config/mimeapps.list"][1] or b"").decode()
    assert "text/html=firefox.desktop;" in mimeapps
    for mime in xdg.MIME_TYPES:
        assert xdg.default_for(mimeapps, mime) == xdg.DESKTOP_ID
    assert after[str(foreign.relative_to(home))] == before[str(foreign.relative_to(home))]

    again = jst(home, "install")
    assert again.returncode == 0
    assert "wrote " not in again.stdout  # idempotent: everything unchanged
    written = [name for name in added if after[name][1] is not None]
    assert again.stdout.count("unchanged ") == len(written) - 1  # all but the receipt
    assert tree(home) == after

    removed = jst(home, "uninstall")
    assert removed.returncode == 0, removed.stderr
    assert tree(home) == before


def test_only_browsers_in_use_get_a_manifest(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".config/chromium").mkdir(parents=True)
    assert jst(home, "install").returncode == 0
    manifests = sorted(str(p.relative_to(home)) for p in home.rglob(manifest.FILE_NAME))
    assert manifests == [f".config/chromium/NativeMessagingHosts/{manifest.FILE_NAME}"]


def test_no_browser_found_says_what_to_do(tmp_path: Path) -> None:
    result = jst(tmp_path, "install")
    assert result.returncode == 0
    assert "No supported browser found" in result.stdout
    assert "--browser" in result.stdout


def test_dry_run_changes_nothing(home: Path) -> None:
    before = tree(home)
    result = jst(home, "install", "--dry-run")
    assert result.returncode == 0
    assert "would write" in result.stdout
    assert tree(home) == before
    assert jst(home, "install").returncode == 0
    installed = tree(home)
    result = jst(home, "uninstall", "--dry-run")
    assert "would remove" in result.stdout
    assert tree(home) == installed


def test_extension_id_browser_and_user_data_dir_options(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    profile = tmp_path / "profile"
    result = jst(
        home, "install", "--browser", "chrome", "--extension-id", "devid",
        "--user-data-dir", str(profile),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for path in (
        home / ".config/google-chrome/NativeMessagingHosts" / manifest.FILE_NAME,
        profile / "NativeMessagingHosts" / manifest.FILE_NAME,
    ):
        origins = json.loads(path.read_text())["allowed_origins"]
        assert origins[-1] == "chrome-extension://devid/"
        assert all(o.endswith("/") for o in origins)
    unknown = jst(home, "install", "--browser", "netscape")
    assert unknown.returncode == 1
    assert "unknown browser netscape" in unknown.stderr


def test_uninstall_leaves_a_manifest_changed_since(home: Path) -> None:
    assert jst(home, "install").returncode == 0
    edited = home / ".config/chromium/NativeMessagingHosts" / manifest.FILE_NAME
    edited.write_text('{"name": "com.jstorrent.native", "path": "/opt/original/host"}')
    result = jst(home, "uninstall")
    assert result.returncode == 0
    assert edited.exists()
    assert "changed since jst installed it" in result.stdout
    assert not (home / ".config/google-chrome/NativeMessagingHosts").exists()


def test_uninstall_without_receipt_removes_only_identical_files(home: Path) -> None:
    assert jst(home, "install").returncode == 0
    (home / ".config/jstorrent-native/install-receipt.json").unlink()
    other = home / ".config/vivaldi/NativeMessagingHosts" / manifest.FILE_NAME
    other.write_text("{}")  # not what we write
    assert jst(home, "uninstall").returncode == 0
    assert other.exists()
    assert list(home.rglob(manifest.FILE_NAME)) == [other]
    assert not (home / ".local/share/applications" / xdg.DESKTOP_ID).exists()


def test_repository_templates_match_what_install_writes() -> None:
    chrome = (REPO / "manifests/com.jstorrent.native.json").read_bytes()
    firefox = (REPO / "manifests/com.jstorrent.native.firefox.json").read_bytes()
    assert chrome == manifest.render(manifest.build("chrome", manifest.PLACEHOLDER))
    assert firefox == manifest.render(manifest.build("firefox", manifest.PLACEHOLDER))
    desktop = (REPO / "contrib/jst-link-handler.desktop").read_text()
    assert desktop == xdg.desktop_entry("/usr/bin/jst-link-handler")


def test_mimeapps_edits_touch_only_our_id() -> None:
    text = "[Added Associations]\nx-scheme-handler/magnet=a.desktop;jst-link-handler.desktop;\n"
    text = xdg.set_default(text, "x-scheme-handler/magnet")
    assert xdg.default_for(text, "x-scheme-handler/magnet") == xdg.DESKTOP_ID
    cleaned = xdg.remove_handler(text)
    assert (
        cleaned
        == "[Added Associations]\nx-scheme-handler/magnet=a.desktop;\n[Default Applications]\n"
    )
    assert xdg.default_for(cleaned, "x-scheme-handler/magnet") is None
    assert xdg.desktop_entry('/opt/my "apps"/$x').splitlines()[4] == (
        'Exec="/opt/my \\"apps\\"/\\$x" %u'
    )


def test_xdg_mime_is_used_when_installed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".config/chromium").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "xdg-mime.calls"
    fake = bin_dir / "xdg-mime"
    fake.write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\n')
    fake.chmod(0o755)
    assert jst(home, "install", path=str(bin_dir)).returncode == 0
    assert calls.read_text().splitlines() == [
        f"default {xdg.DESKTOP_ID} {mime}" for mime in xdg.MIME_TYPES
    ]
    # What xdg-mime wrote (here: nothing) is ours to clean only where it names us.
    mimeapps = home / ".config/mimeapps.list"
    mimeapps.write_text(
        "[Default Applications]\nx-scheme-handler/magnet=jst-link-handler.desktop;\n"
        "text/html=firefox.desktop;\n"
    )
    assert jst(home, "uninstall", path=str(bin_dir)).returncode == 0
    assert mimeapps.read_text() == "[Default Applications]\ntext/html=firefox.desktop;\n"
