"""Logging for the three programs: stderr always, plus a size-capped file in the config dir.

Nothing ever logs to stdout: the io-daemon's stdout carries only its port line and the
host's stdout carries only Native Messaging frames.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path

# One log file never grows past ~4 MiB in all (the original's io-daemon.log grows forever).
LOG_FILE_BYTES = 1024 * 1024
LOG_FILE_BACKUPS = 3

_RUST_LEVELS = {
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": logging.DEBUG,
}


def level_from_env() -> int:
    """Map ``RUST_LOG`` (§3.5) to a level; a plain level name or its last directive."""
    value = os.environ.get("RUST_LOG", "").strip().lower()
    directive = value.split(",")[-1].split("=")[-1] if value else "info"
    return _RUST_LEVELS.get(directive, logging.INFO)


def setup(program: str, log_file: Path | None, stderr: bool = True) -> logging.Logger:
    """Configure the ``jst`` logger tree for ``program``; returns the ``jst`` logger.

    ``stderr=False`` (the link-handler, which must be silent) logs to the file only.
    """
    formatter = logging.Formatter(
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
            log_file.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.handlers.RotatingFileHandler(
                log_file, maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILE_BACKUPS, encoding="utf-8"
            )
        except OSError as exc:
            # §9.15: an unwritable log location is not fatal; stderr still works.
            if stderr:
                root.warning("cannot open log file %s (%s); logging to stderr only", log_file, exc)
        else:
            handler.setFormatter(formatter)
            root.addHandler(handler)
    return root
