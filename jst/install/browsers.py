"""Where each browser reads Native Messaging manifests (../shared/spec/BROWSERS.md).

A *layout* is one directory one browser reads, plus how we tell that the browser is
used here (its profile directory exists). User-level directories are the default;
``--system`` uses the system-wide ones and needs root. Sandboxed browsers (Snap
Chromium, Flatpak) have layouts of their own; Flatpak ones need more than a manifest,
which ``sandbox_note`` says.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

import attrs

Kind = Literal["chrome", "firefox"]


@attrs.frozen
class Layout:
    key: str  # chrome, chromium, brave, edge, vivaldi, firefox, chromium-snap, flatpak-<id>
    name: str
    kind: Kind
    manifest_dir: Path
    presence: Path  # exists when the browser has been used here
    sandbox_note: str | None = None
    # For Flatpak: a wrapper inside the sandbox's view that runs the host outside it.
    wrapper: Path | None = None


# key, display name, kind, Linux config path (under ~/.config or ~), macOS path under
# ~/Library/Application Support
_FAMILY: list[tuple[str, str, Kind, str, str]] = [
    ("chrome", "Google Chrome", "chrome", ".config/google-chrome", "Google/Chrome"),
    ("chromium", "Chromium", "chrome", ".config/chromium", "Chromium"),
    ("brave", "Brave", "chrome", ".config/BraveSoftware/Brave-Browser",
     "BraveSoftware/Brave-Browser"),
    ("edge", "Microsoft Edge", "chrome", ".config/microsoft-edge", "Microsoft Edge"),
    ("vivaldi", "Vivaldi", "chrome", ".config/vivaldi", "Vivaldi"),
]  # fmt: skip

_FLATPAKS: list[tuple[str, str, Kind, str]] = [
    ("com.google.Chrome", "Google Chrome (Flatpak)", "chrome", "config/google-chrome"),
    ("org.chromium.Chromium", "Chromium (Flatpak)", "chrome", "config/chromium"),
    ("com.brave.Browser", "Brave (Flatpak)", "chrome", "config/BraveSoftware/Brave-Browser"),
    ("com.microsoft.Edge", "Microsoft Edge (Flatpak)", "chrome", "config/microsoft-edge"),
    ("com.vivaldi.Vivaldi", "Vivaldi (Flatpak)", "chrome", "config/vivaldi"),
    ("org.mozilla.firefox", "Firefox (Flatpak)", "firefox", ".mozilla"),
]


def flatpak_note(app_id: str) -> str:
    return (
        f"{app_id} runs sandboxed: it can start the host only through the wrapper jst "
        f"wrote, which needs permission to leave the sandbox. Grant it with: "
        f"flatpak override --user --talk-name=org.freedesktop.Flatpak {app_id}"
    )


def user_layouts(home: Path, platform: str = sys.platform) -> list[Layout]:
    if platform == "darwin":
        support = home / "Library" / "Application Support"
        layouts = [
            Layout(key, name, kind, support / mac / "NativeMessagingHosts", support / mac)
            for key, name, kind, _linux, mac in _FAMILY
        ]
        layouts.append(
            Layout("firefox", "Firefox", "firefox",
                   support / "Mozilla" / "NativeMessagingHosts", support / "Firefox")
        )  # fmt: skip
        return layouts
    layouts = [
        Layout(key, name, kind, home / linux / "NativeMessagingHosts", home / linux)
        for key, name, kind, linux, _mac in _FAMILY
    ]
    layouts.append(
        Layout("firefox", "Firefox", "firefox", home / ".mozilla" / "native-messaging-hosts",
               home / ".mozilla")
    )  # fmt: skip
    snap = home / "snap" / "chromium"
    layouts.append(
        Layout("chromium-snap", "Chromium (Snap)", "chrome",
               snap / "common" / "chromium" / "NativeMessagingHosts", snap)
    )  # fmt: skip
    for app_id, name, kind, sub in _FLATPAKS:
        app = home / ".var" / "app" / app_id
        hosts = "native-messaging-hosts" if kind == "firefox" else "NativeMessagingHosts"
        layouts.append(
            Layout(
                f"flatpak-{app_id}", name, kind, app / sub / hosts, app,
                sandbox_note=flatpak_note(app_id),
                wrapper=app / "data" / "jstorrent-native" / "jst-native-host",
            )
        )  # fmt: skip
    return layouts


def system_layouts(platform: str = sys.platform) -> list[Layout]:
    if platform == "darwin":
        lib = Path("/Library")
        return [
            Layout("chrome", "Google Chrome", "chrome",
                   lib / "Google/Chrome/NativeMessagingHosts",
                   Path("/Applications/Google Chrome.app")),
            Layout("chromium", "Chromium", "chrome",
                   lib / "Application Support/Chromium/NativeMessagingHosts",
                   Path("/Applications/Chromium.app")),
            Layout("firefox", "Firefox", "firefox",
                   lib / "Application Support/Mozilla/NativeMessagingHosts",
                   Path("/Applications/Firefox.app")),
        ]  # fmt: skip
    return [
        # Brave reads Chrome's system directory in practice.
        Layout("chrome", "Google Chrome and Brave", "chrome",
               Path("/etc/opt/chrome/native-messaging-hosts"), Path("/etc/opt/chrome")),
        Layout("chromium", "Chromium", "chrome",
               Path("/etc/chromium/native-messaging-hosts"), Path("/etc/chromium")),
        Layout("edge", "Microsoft Edge", "chrome",
               Path("/etc/opt/edge/native-messaging-hosts"), Path("/etc/opt/edge")),
        Layout("vivaldi", "Vivaldi", "chrome",
               Path("/etc/opt/vivaldi/native-messaging-hosts"), Path("/etc/opt/vivaldi")),
        Layout("firefox", "Firefox", "firefox",
               Path("/usr/lib/mozilla/native-messaging-hosts"), Path("/usr/lib/mozilla")),
    ]  # fmt: skip


def user_data_dir_layout(user_data_dir: Path) -> Layout:
    """A Chromium-family browser started with ``--user-data-dir`` reads manifests there."""
    return Layout(
        "user-data-dir", f"browser profile {user_data_dir}", "chrome",
        user_data_dir / "NativeMessagingHosts", user_data_dir,
    )  # fmt: skip


KEYS = (
    [key for key, *_ in _FAMILY]
    + ["firefox", "chromium-snap"]
    + [f"flatpak-{app_id}" for app_id, *_ in _FLATPAKS]
)
