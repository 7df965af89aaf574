"""``jst-link-handler <magnet-uri | path.torrent | file://...>`` (§7).

Quiet by contract: a normal run prints nothing (tooling treats the word "python" on
stderr as a failure, §3.6) and exits 0. Everything is logged to
``<config>/jstorrent-native/jst-link-handler.log``. On failure the reason goes to stderr
and to a dialog (zenity, then kdialog on Linux; osascript on macOS; a message box on
Windows; ``JST_LINK_HANDLER_DIALOG=0`` turns it off), and the exit status is 1. A usage
error exits 2. Python's own warnings are silenced and no traceback is ever printed.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from jst import __version__

LOG_FILE_NAME = "jst-link-handler.log"
DIALOG_ENV = "JST_LINK_HANDLER_DIALOG"
TITLE = "JSTorrent Error"

log = logging.getLogger("jst.linkhandler")


def _setup_logging() -> None:
    from jst import config, logs

    logs.setup("link-handler", config.app_dir() / LOG_FILE_NAME, stderr=False)


def error_text(reason: str, target: str) -> str:
    return f"JSTorrent could not process your link.\n\nReason: {reason}\n\nLink: {target}"


def show_dialog(text: str) -> None:
    """Show the error and wait until it is dismissed; silently skip when impossible."""
    if os.environ.get(DIALOG_ENV) == "0":
        return
    try:
        if sys.platform == "win32":
            import ctypes

            ctypes.windll.user32.MessageBoxW(None, text, TITLE, 0x10)  # type: ignore[attr-defined]
            return
        if sys.platform == "darwin":
            from jst.host.desktop import applescript_string

            script = f"display alert {applescript_string(TITLE)} message {applescript_string(text)}"
            argv = ["osascript", "-e", script]
            subprocess.run(argv, check=False, capture_output=True)
            return
        if shutil.which("zenity"):
            argv = ["zenity", "--error", f"--title={TITLE}", f"--text={text}", "--no-markup"]
        elif shutil.which("kdialog"):
            argv = ["kdialog", "--title", TITLE, "--error", text]
        else:
            return
        subprocess.run(argv, check=False, capture_output=True, stdin=subprocess.DEVNULL)
    except OSError as exc:
        log.info("cannot show the error dialog: %s", exc)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jst-link-handler",
        description="Hand a magnet link or a .torrent file to the JSTorrent extension.",
    )
    p.add_argument("target", help="a magnet: link, a path to a .torrent file, or a file:// URI")
    p.add_argument("-V", "--version", action="version", version=f"%(prog)s {__version__}")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    warnings.simplefilter("ignore")
    args = parser().parse_args(argv)
    _setup_logging()
    import trio

    from jst.linkhandler.main import run
    from jst.linkhandler.target import LinkError, parse_target, printable

    target: str = args.target
    log.info("jst-link-handler %s: %s", __version__, printable(target[:200]))
    try:
        item = parse_target(target)
        # SIGINT and SIGTERM end a wait quietly (§7.5): nothing of ours to clean up (a
        # browser it opened is the user's and keeps running).
        if not trio.run(run, item, Path(sys.argv[0]).resolve().parent):
            return 0
    except LinkError as exc:
        reason = str(exc)
    except KeyboardInterrupt:
        log.info("interrupted")
        return 0  # §7.5: SIGINT is not a failure
    except Exception as exc:  # our bug: a clean message, the traceback in the log
        log.exception("unexpected error")
        reason = f"Internal error: {exc}"
    else:
        log.info("Link Handler finished successfully.")
        return 0
    reason = printable(reason)
    log.error("failed: %s", reason)
    text = error_text(reason, printable(target))
    print(text, file=sys.stderr)
    show_dialog(text)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
