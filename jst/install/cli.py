"""``jst install``, ``jst uninstall`` and ``jst doctor``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from jst.install import actions, browsers, doctor, manifest


def _parser(command: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"jst {command}")
    p.add_argument("--system", action="store_true", help="system-wide directories (needs root)")
    p.add_argument(
        "--browser",
        action="append",
        default=[],
        metavar="NAME",
        help=f"only this browser, even if it looks unused ({', '.join(browsers.KEYS)})",
    )
    p.add_argument(
        "--user-data-dir",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="also a Chromium-family browser started with --user-data-dir=DIR",
    )
    if command != "doctor":
        p.add_argument(
            "--dry-run", action="store_true", help="print what would change, change nothing"
        )
    if command == "install":
        p.add_argument(
            "--extension-id",
            action="append",
            default=[],
            metavar="ID",
            help="also allow this extension id (for developers of the extension)",
        )
        p.add_argument(
            "--service",
            action="store_true",
            help="also install and enable the per-user jst service (systemd --user unit, "
            "LaunchAgent on macOS)",
        )
        p.add_argument(
            "--firefox-extension-id",
            action="append",
            default=[],
            metavar="ID",
            help=f"the Firefox add-on id(s) to allow (default {manifest.FIREFOX_EXTENSION_IDS[0]})",
        )
    return p


def main(command: str, argv: Sequence[str]) -> int:
    args = _parser(command).parse_args(argv)
    opts = actions.Options(
        home=Path.home(),
        system=args.system,
        browsers=args.browser,
        user_data_dirs=args.user_data_dir,
        extension_ids=getattr(args, "extension_id", []),
        firefox_ids=getattr(args, "firefox_extension_id", []) or manifest.FIREFOX_EXTENSION_IDS,
        dry_run=getattr(args, "dry_run", False),
        service=getattr(args, "service", False),
    )
    try:
        if command == "doctor":
            return doctor.run(opts)
        installer = actions.Installer(opts, sys.stdout)
        return installer.install() if command == "install" else installer.uninstall()
    except actions.InstallError as exc:
        print(f"jst {command}: {exc}", file=sys.stderr)
        return 1
    except PermissionError as exc:
        hint = " (system directories need root: sudo)" if opts.system else ""
        print(f"jst {command}: {exc}{hint}", file=sys.stderr)
        return 1
