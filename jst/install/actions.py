"""What ``jst install`` writes and ``jst uninstall`` removes.

Install writes, for each browser found (or named with ``--browser``), the manifest into
the directory that browser reads; on Linux also the link-handler's desktop entry and its
registration as the handler of ``magnet:`` and ``.torrent``. Every file written and every
directory created is listed in a *receipt* (``<config>/jstorrent-native/install-receipt.json``)
with the SHA-256 of what was written. Uninstall removes exactly those: a file is deleted
only if it still has the content we wrote (a manifest someone changed or replaced since
is left, and said so), a directory only if we created it and it is empty, and only our
desktop id is taken out of ``mimeapps.list``. Without a receipt, uninstall recomputes
what install would write and removes the files that match it byte for byte.

Running install again is harmless: identical files are left untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import attrs

from jst import config
from jst.install import browsers, manifest, xdg
from jst.install.browsers import Layout

RECEIPT_NAME = "install-receipt.json"


class InstallError(Exception):
    pass


def script_dir() -> Path:
    """Where pip put our console scripts (the venv's ``bin``, or ``Scripts`` on Windows)."""
    return Path(sys.executable).parent


def executable(name: str) -> Path:
    suffix = ".exe" if sys.platform == "win32" else ""
    path = script_dir() / f"{name}{suffix}"
    if not path.is_file():
        raise InstallError(f"cannot find {path}: install jst first (make install)")
    return path


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def data_home(home: Path) -> Path:
    value = os.environ.get("XDG_DATA_HOME", "")
    return Path(value) if os.path.isabs(value) else home / ".local" / "share"


def config_home(home: Path) -> Path:
    value = os.environ.get("XDG_CONFIG_HOME", "")
    return Path(value) if os.path.isabs(value) else home / ".config"


@attrs.frozen
class FileWrite:
    path: Path
    content: bytes
    mode: int
    what: str


@attrs.define
class Receipt:
    files: dict[str, str] = attrs.field(factory=dict)  # path -> sha256 written
    dirs: list[str] = attrs.field(factory=list)  # created by us, deepest last
    mimeapps: list[str] = attrs.field(factory=list)
    # mimeapps.list files that did not exist before install: removed when left empty.
    created: list[str] = attrs.field(factory=list)

    @classmethod
    def load(cls, path: Path) -> Receipt | None:
        try:
            doc = json.loads(path.read_text("utf-8"))
            return cls(
                dict(doc["files"]),
                list(doc["dirs"]),
                list(doc.get("mimeapps", [])),
                list(doc.get("created", [])),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def dump(self) -> bytes:
        doc = {
            "version": 1,
            "files": self.files,
            "dirs": self.dirs,
            "mimeapps": self.mimeapps,
            "created": self.created,
        }
        return (json.dumps(doc, indent=2) + "\n").encode()


@attrs.define
class Options:
    home: Path
    system: bool = False
    browsers: Sequence[str] = ()
    user_data_dirs: Sequence[Path] = ()
    extension_ids: Sequence[str] = ()
    firefox_ids: Sequence[str] = manifest.FIREFOX_EXTENSION_IDS
    dry_run: bool = False
    platform: str = sys.platform
    service: bool = False  # install --service: the per-user jst service (service_unit.py)


def layouts_for(opts: Options, everything: bool = False) -> list[Layout]:
    """The layouts to install into: named ones, else the browsers in use here."""
    known = (
        browsers.system_layouts(opts.platform)
        if opts.system
        else browsers.user_layouts(opts.home, opts.platform)
    )
    if opts.browsers:
        by_key = {layout.key: layout for layout in known}
        unknown = [b for b in opts.browsers if b not in by_key]
        if unknown:
            raise InstallError(
                f"unknown browser {', '.join(unknown)} (choose from {', '.join(by_key)})"
            )
        chosen = [by_key[b] for b in opts.browsers]
    else:
        chosen = [layout for layout in known if everything or layout.presence.exists()]
    return chosen + [browsers.user_data_dir_layout(d) for d in opts.user_data_dirs]


def planned_writes(opts: Options, layouts: Sequence[Layout]) -> list[FileWrite]:
    host = str(executable("jst-native-host"))
    writes: list[FileWrite] = []
    for layout in layouts:
        target = host
        if layout.wrapper is not None:
            script = f'#!/bin/sh\nexec flatpak-spawn --host "{host}" "$@"\n'
            writes.append(
                FileWrite(layout.wrapper, script.encode(), 0o755, f"{layout.name} wrapper")
            )
            target = str(layout.wrapper)
        doc = manifest.build(layout.kind, target, opts.extension_ids, opts.firefox_ids)
        writes.append(
            FileWrite(layout.manifest_dir / manifest.FILE_NAME, manifest.render(doc), 0o644,
                      f"{layout.name} manifest")
        )  # fmt: skip
    if opts.platform.startswith("linux") and not opts.system:
        entry = xdg.desktop_entry(str(executable("jst-link-handler")))
        path = data_home(opts.home) / "applications" / xdg.DESKTOP_ID
        writes.append(FileWrite(path, entry.encode(), 0o644, "link-handler desktop entry"))
    return writes


class Installer:
    def __init__(self, opts: Options, out: TextIO) -> None:
        self.opts = opts
        self.out = out
        self.receipt_path = (
            config.app_dir() if not opts.system else Path("/etc/jstorrent-native")
        ) / RECEIPT_NAME

    def say(self, text: str) -> None:
        print(text, file=self.out)

    # -- install ------------------------------------------------------------------------

    def install(self) -> int:
        opts = self.opts
        layouts = layouts_for(opts)
        if opts.platform == "win32":
            from jst.install import windows

            return windows.install(opts, self)
        if not layouts:
            self.say(
                "No supported browser found in "
                + ("the system directories" if opts.system else str(opts.home))
                + ". Start your browser once and run `jst install` again, or name it with "
                + "--browser ("
                + ", ".join(browsers.KEYS)
                + ")."
            )
        receipt = Receipt.load(self.receipt_path) or Receipt()
        for write in planned_writes(opts, layouts):
            self._write(write, receipt)
        for layout in layouts:
            if layout.sandbox_note:
                self.say(f"WARNING: {layout.sandbox_note}")
        if opts.platform.startswith("linux") and not opts.system:
            self._register_handlers(receipt)
        if opts.service:
            from jst.install import service_unit

            for write in service_unit.writes(opts):
                self._write(write, receipt)
            service_unit.enable(opts, self.say)
        if not opts.dry_run:
            self._mkdirs(self.receipt_path.parent, receipt)
            self.receipt_path.write_bytes(receipt.dump())
        return 0

    def _mkdirs(self, directory: Path, receipt: Receipt) -> None:
        missing: list[Path] = []
        while not directory.exists():
            missing.append(directory)
            directory = directory.parent
        for d in reversed(missing):
            if self.opts.dry_run:
                continue
            d.mkdir()
            if str(d) not in receipt.dirs:
                receipt.dirs.append(str(d))

    def _write(self, write: FileWrite, receipt: Receipt) -> None:
        try:
            current = write.path.read_bytes()
        except OSError:
            current = None
        if current == write.content:
            self.say(f"unchanged  {write.path}  ({write.what})")
        elif self.opts.dry_run:
            self.say(f"would write {write.path}  ({write.what}, mode {write.mode:o})")
            return
        else:
            self._mkdirs(write.path.parent, receipt)
            temp = write.path.with_name(f".{write.path.name}.jst-tmp")
            temp.write_bytes(write.content)
            temp.chmod(write.mode)
            os.replace(temp, write.path)
            self.say(f"wrote      {write.path}  ({write.what})")
        if not self.opts.dry_run:
            write.path.chmod(write.mode)
            receipt.files[str(write.path)] = _sha256(write.content)

    def _register_handlers(self, receipt: Receipt) -> None:
        xdg_mime = shutil.which("xdg-mime")
        mimeapps = config_home(self.opts.home) / "mimeapps.list"
        for mime in xdg.MIME_TYPES:
            if self.opts.dry_run:
                self.say(f"would make {xdg.DESKTOP_ID} the handler of {mime}")
                continue
            if xdg_mime is not None:
                result = subprocess.run(
                    [xdg_mime, "default", xdg.DESKTOP_ID, mime], capture_output=True, check=False
                )
                if result.returncode != 0:
                    self.say(
                        f"WARNING: xdg-mime default {mime} failed: {result.stderr.decode().strip()}"
                    )
            else:
                if not mimeapps.exists():
                    self._mkdirs(mimeapps.parent, receipt)
                    receipt.created.append(str(mimeapps))
                    text = ""
                else:
                    text = mimeapps.read_text("utf-8")
                mimeapps.write_text(xdg.set_default(text, mime), "utf-8")
            self.say(f"handler    {mime} -> {xdg.DESKTOP_ID}")
        if not self.opts.dry_run and str(mimeapps) not in receipt.mimeapps:
            receipt.mimeapps.append(str(mimeapps))

    # -- uninstall -----------------------------------------------------------------------

    def uninstall(self) -> int:
        opts = self.opts
        if opts.platform == "win32":
            from jst.install import windows

            return windows.uninstall(opts, self)
        receipt = Receipt.load(self.receipt_path)
        if receipt is None:
            self.say("No install receipt; removing files that match what `jst install` writes.")
            receipt = Receipt(
                files={
                    str(w.path): _sha256(w.content)
                    for w in planned_writes(opts, layouts_for(opts, everything=True))
                },
                mimeapps=[str(config_home(opts.home) / "mimeapps.list")],
            )
        from jst.install import service_unit

        service_unit.disable(receipt.files, opts, self.say)
        for path_text, digest in receipt.files.items():
            path = Path(path_text)
            try:
                current = path.read_bytes()
            except OSError:
                continue
            if _sha256(current) != digest:
                self.say(f"left       {path}  (changed since jst installed it)")
            elif opts.dry_run:
                self.say(f"would remove {path}")
            else:
                path.unlink()
                self.say(f"removed    {path}")
        for mimeapps_text in receipt.mimeapps:
            self._unregister(Path(mimeapps_text), created=mimeapps_text in receipt.created)
        if not opts.dry_run and self.receipt_path.exists():
            self.receipt_path.unlink()
        for dir_text in reversed(receipt.dirs):
            directory = Path(dir_text)
            if directory.is_dir() and not any(directory.iterdir()) and not opts.dry_run:
                directory.rmdir()
        return 0

    def _unregister(self, mimeapps: Path, created: bool) -> None:
        try:
            text = mimeapps.read_text("utf-8")
        except OSError:
            return
        cleaned = xdg.remove_handler(text)
        if cleaned == text:
            return
        if self.opts.dry_run:
            self.say(f"would remove {xdg.DESKTOP_ID} from {mimeapps}")
        elif created and not xdg.has_entries(cleaned):
            mimeapps.unlink()  # we created it and nothing else was added since
            self.say(f"removed    {mimeapps}")
        else:
            mimeapps.write_text(cleaned, "utf-8")
            self.say(f"removed    {xdg.DESKTOP_ID} from {mimeapps}")
