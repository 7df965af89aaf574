"""Logging for the three programs: stderr always, plus a size-capped file in the config dir.

Nothing ever logs to stdout: the io-daemon's stdout carries only its port line and the
host's stdout carries only Native Messaging frames.

The logs record magnets, torrent names and paths, so (issue 12, item 10):

* the files are private: created 0600 (an older 0644 file is tightened when opened) in
  the app directory, which is made 0700;
* a logged value cannot forge a log line: control characters (newlines included) in a
  message are escaped (``\\n``, ``\\x1b``, ``\\u2028``...), and the lines of a traceback
  are indented, so every line that starts at column 0 is one we wrote.

Rotation is done here rather than by ``logging.handlers`` (whose import, ~10 ms, sits
on every program's start, issue 17).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import stat
import sys
from pathlib import Path

# One log file never grows past ~4 MiB in all (the original's io-daemon.log grows forever).
LOG_FILE_BYTES = 1024 * 1024
LOG_FILE_BACKUPS = 3
FILE_MODE = 0o600
DIR_MODE = 0o700
TRACEBACK_INDENT = "    "

_RUST_LEVELS = {
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": logging.DEBUG,
}

# C0 controls, DEL, C1 controls and the Unicode line and paragraph separators: every
# character some viewer or terminal treats as a line break or an escape sequence.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_one(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` with every control character written as a visible escape."""
    return _CONTROL.sub(_escape_one, text)


def _indented(text: str) -> str:
    """A multi-line block (a traceback, which follows its record's line): controls
    escaped, every line indented, so none of them can pass for a log line of its own."""
    return "\n".join(TRACEBACK_INDENT + escape_controls(line) for line in text.split("\n"))


class SafeFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: object) -> str:
        return _indented(super().formatException(ei))  # type: ignore[arg-type]

    def formatStack(self, stack_info: str) -> str:
        return _indented(super().formatStack(stack_info))


def private_directory(directory: Path) -> None:
    """Create ``directory`` (and parents) and make it 0700 if it is ours (Unix)."""
    directory.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    if sys.platform == "win32":
        return
    info = directory.stat()
    if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) & 0o077:
        directory.chmod(stat.S_IMODE(info.st_mode) & ~0o077)


class PrivateRotatingFileHandler(logging.FileHandler):
    """Append to a 0600 file; past ``max_bytes`` rename it to ``.1`` (``.1`` to ``.2``...,
    keeping ``backups``) and start a new one: the semantics of
    ``logging.handlers.RotatingFileHandler``."""

    def __init__(self, filename: Path, max_bytes: int, backups: int) -> None:
        self.max_bytes = max_bytes
        self.backups = backups
        # backslashreplace: a logged value holding a lone surrogate (an undecodable file
        # name) is written escaped instead of printing a "Logging error" traceback.
        super().__init__(filename, mode="a", encoding="utf-8", errors="backslashreplace")

    def _open(self) -> io.TextIOWrapper:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(self.baseFilename, flags, FILE_MODE)
        if hasattr(os, "fchmod"):
            with contextlib.suppress(OSError):
                os.fchmod(fd, FILE_MODE)  # a log an earlier version created 0644
        return open(fd, "a", encoding=self.encoding, errors=self.errors)

    def _should_roll(self, record: logging.LogRecord) -> bool:
        if self.stream is None:
            self.stream = self._open()
        size = self.stream.seek(0, os.SEEK_END)
        return size > 0 and size + len(self.format(record)) + 1 > self.max_bytes

    def _roll(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        base = self.baseFilename
        for n in range(self.backups - 1, 0, -1):
            if os.path.exists(f"{base}.{n}"):
                os.replace(f"{base}.{n}", f"{base}.{n + 1}")
        if self.backups > 0:
            os.replace(base, f"{base}.1")
        else:
            os.remove(base)
        self.stream = self._open()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self._should_roll(record):
                self._roll()
        except Exception:
            self.handleError(record)
            return
        super().emit(record)


def level_from_env() -> int:
    """Map ``RUST_LOG`` (§3.5) to a level; a plain level name or its last directive."""
    value = os.environ.get("RUST_LOG", "").strip().lower()
    directive = value.split(",")[-1].split("=")[-1] if value else "info"
    return _RUST_LEVELS.get(directive, logging.INFO)


def setup(program: str, log_file: Path | None, stderr: bool = True) -> logging.Logger:
    """Configure the ``jst`` logger tree for ``program``; returns the ``jst`` logger.

    ``stderr=False`` (the link-handler, which must be silent) logs to the file only.
    """
    formatter = SafeFormatter(
        f"[%(asctime)s.%(msecs)03d] %(levelname)s {program}: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
    )
    root = logging.getLogger("jst")
    root.setLevel(level_from_env())
    root.propagate = False
    if stderr:
        to_stderr = logging.StreamHandler(sys.stderr)
        to_stderr.setFormatter(formatter)
        root.addHandler(to_stderr)
    if log_file is not None:
        try:
            private_directory(log_file.parent)
            handler = PrivateRotatingFileHandler(log_file, LOG_FILE_BYTES, LOG_FILE_BACKUPS)
        except OSError as exc:
            # §9.15: an unwritable log location is not fatal; stderr still works.
            if stderr:
                root.warning("cannot open log file %s (%s); logging to stderr only", log_file, exc)
        else:
            handler.setFormatter(formatter)
            root.addHandler(handler)
    return root
