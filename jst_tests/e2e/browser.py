"""Starting Debian's Chromium with the test extension, the way issue #6 prescribes.

Playwright for Python drives the browser (``executable_path``: the system Chromium;
Playwright's own browsers are never downloaded). The extension is loaded unpacked; its
fixed ``key`` gives it a stable id, computed here the way Chromium does. The Native
Messaging manifest is written into the profile's ``NativeMessagingHosts/`` by
``jst install --user-data-dir`` itself.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

EXTENSION_DIR = Path(__file__).parent / "extension"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Flags that keep Chromium off the network (and quiet) besides the namespace we run in.
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--no-default-browser-check", "--disable-breakpad",
]  # fmt: skip


def extension_id(extension_dir: Path = EXTENSION_DIR) -> str:
    """Chromium's id for an extension with a ``key``: SHA-256 of the key, hex 0-f as a-p."""
    key = json.loads((extension_dir / "manifest.json").read_text())["key"]
    digest = hashlib.sha256(base64.b64decode(key)).hexdigest()[:32]
    return "".join(chr(ord("a") + int(c, 16)) for c in digest)


def install_manifest(user_data_dir: Path, home: Path) -> None:
    """Register jst for this profile with jst's own installer."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "JST"))}
    env.update(HOME=str(home), PATH=str(home))  # nothing on PATH: no xdg-mime side trips
    home.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "jst", "install", "--user-data-dir", str(user_data_dir),
         "--extension-id", extension_id()],
        env=env, check=True, capture_output=True, timeout=60,
    )  # fmt: skip


def launch_args(headed: bool = False) -> list[str]:
    return [
        *FLAGS,
        *([] if headed else ["--headless=new"]),
        f"--disable-extensions-except={EXTENSION_DIR}",
        f"--load-extension={EXTENSION_DIR}",
    ]
