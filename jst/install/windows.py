"""``jst install`` / ``jst uninstall`` on Windows: manifests plus HKCU registry keys.

Chrome-family browsers and Firefox find a host through a registry key
``HKCU\\Software\\<vendor>\\NativeMessagingHosts\\com.jstorrent.native`` whose default
value is the manifest's path (BROWSERS.md); the manifests live in
``%LOCALAPPDATA%\\JSTorrent``. The link-handler is registered as the ``magnet`` URL
handler and the ``.torrent`` handler as in §8.4. Uninstall deletes exactly these keys
and files, and only when they still point at what we wrote. Not exercised by CI (Linux).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jst.install import manifest

if TYPE_CHECKING:
    from jst.install.actions import Installer, Options

VENDOR_KEYS = {
    "chrome": r"Software\Google\Chrome\NativeMessagingHosts",
    "chromium": r"Software\Chromium\NativeMessagingHosts",
    "brave": r"Software\BraveSoftware\Brave-Browser\NativeMessagingHosts",
    "edge": r"Software\Microsoft\Edge\NativeMessagingHosts",
    "vivaldi": r"Software\Vivaldi\NativeMessagingHosts",
    "firefox": r"Software\Mozilla\NativeMessagingHosts",
}
CLASSES = r"Software\Classes"


def _winreg() -> Any:
    # Imported by name: type checkers on other platforms see no winreg at all.
    return importlib.import_module("winreg")


def _app_dir() -> Path:
    return Path(os.environ.get("LOCALAPPDATA", str(Path.home()))) / "JSTorrent"


def _manifest_paths() -> dict[str, Path]:
    app = _app_dir()
    return {
        "chrome": app / manifest.FILE_NAME,
        "firefox": app / f"{manifest.HOST_NAME}.firefox.json",
    }


def _set(winreg: Any, path: str, name: str | None, value: str) -> None:
    with winreg.CreateKey(winreg.HKEY_CURRENT_USER, path) as key:
        winreg.SetValueEx(key, name, 0, winreg.REG_SZ, value)


def _link_keys(link: str) -> list[tuple[str, str | None, str]]:
    command = f'"{link}" "%1"'
    icon = f"{link},0"
    keys: list[tuple[str, str | None, str]] = [
        (r"Software\RegisteredApplications", "JSTorrent", r"Software\JSTorrent\Capabilities"),
        (r"Software\JSTorrent\Capabilities", "ApplicationName", "JSTorrent"),
        (
            r"Software\JSTorrent\Capabilities",
            "ApplicationDescription",
            "BitTorrent client for Chrome",
        ),
        (r"Software\JSTorrent\Capabilities\UrlAssociations", "magnet", "JSTorrent.Magnet"),
        (r"Software\JSTorrent\Capabilities\FileAssociations", ".torrent", "JSTorrent.Torrent"),
        (rf"{CLASSES}\JSTorrent.Magnet", None, "URL:BitTorrent Magnet Link"),
        (rf"{CLASSES}\JSTorrent.Magnet", "URL Protocol", ""),
        (rf"{CLASSES}\JSTorrent.Torrent", None, "BitTorrent File"),
        (rf"{CLASSES}\.torrent", None, "JSTorrent.Torrent"),
        (rf"{CLASSES}\.torrent", "Content Type", "application/x-bittorrent"),
    ]
    for cls in ("JSTorrent.Magnet", "JSTorrent.Torrent"):
        keys += [
            (rf"{CLASSES}\{cls}\DefaultIcon", None, icon),
            (rf"{CLASSES}\{cls}\shell\open", "FriendlyAppName", "JSTorrent"),
            (rf"{CLASSES}\{cls}\shell\open\command", None, command),
        ]
    return keys


def install(opts: Options, installer: Installer) -> int:
    winreg = _winreg()

    from jst.install.actions import executable

    host, link = str(executable("jst-native-host")), str(executable("jst-link-handler"))
    paths = _manifest_paths()
    paths["chrome"].parent.mkdir(parents=True, exist_ok=True)
    for kind, path in paths.items():
        doc = manifest.build(kind, host, opts.extension_ids, opts.firefox_ids)  # type: ignore[arg-type]
        if opts.dry_run:
            installer.say(f"would write {path}")
            continue
        path.write_bytes(manifest.render(doc))
        installer.say(f"wrote      {path}")
    for browser, key in VENDOR_KEYS.items():
        target = paths["firefox" if browser == "firefox" else "chrome"]
        if opts.dry_run:
            installer.say(rf"would set  HKCU\{key}\{manifest.HOST_NAME} = {target}")
        else:
            _set(winreg, rf"{key}\{manifest.HOST_NAME}", None, str(target))
    for key_path, name, value in _link_keys(link):
        if not opts.dry_run:
            _set(winreg, key_path, name, value)
    installer.say("registered the link handler for magnet: and .torrent")
    return 0


def uninstall(opts: Options, installer: Installer) -> int:
    winreg = _winreg()
    paths = _manifest_paths()
    for key in VENDOR_KEYS.values():
        full = rf"{key}\{manifest.HOST_NAME}"
        try:
            with winreg.OpenKey(winreg.HKEY_CURRENT_USER, full) as handle:
                value, _type = winreg.QueryValueEx(handle, None)
        except OSError:
            continue
        if value in {str(p) for p in paths.values()} and not opts.dry_run:
            winreg.DeleteKey(winreg.HKEY_CURRENT_USER, full)
            installer.say(rf"removed    HKCU\{full}")
    for path in paths.values():
        if path.exists() and not opts.dry_run:
            path.unlink()
            installer.say(f"removed    {path}")
    from jst.install.actions import script_dir

    link_exe = str(script_dir() / "jst-link-handler.exe")
    for key_path, name, expected in reversed(_link_keys(link_exe)):
        # Only values that still say what we wrote: another program may own them now.
        try:
            access = winreg.KEY_QUERY_VALUE | winreg.KEY_SET_VALUE
            with winreg.OpenKey(winreg.HKEY_CURRENT_USER, key_path, 0, access) as handle:
                value, _type = winreg.QueryValueEx(handle, name)
                if value == expected and not opts.dry_run:
                    winreg.DeleteValue(handle, name)
        except OSError:
            pass
    installer.say("removed the link handler registration")
    return 0
