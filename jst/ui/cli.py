"""Command lines of ``jst status``, ``jst add`` and ``jst rpc`` (see README).

Exit statuses: 0 done; 1 something could not be read (status) or delivered (add), with
the reason on stderr; 2 a usage error. Each command imports only what it uses: rich only
for ``jst status`` without ``--json``.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
from collections.abc import Sequence

from jst import __version__


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and 0 <= value <= 3600):
        raise argparse.ArgumentTypeError("seconds must be between 0 and 3600")
    return value


def _printable_output() -> None:
    """Paths may hold bytes that are not UTF-8 (Python keeps them as lone surrogates):
    print them as ``\udcff`` escapes instead of failing with a traceback."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


def status_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(
        prog="jst status",
        description="What runs now: hosts, io-daemons, the service, download roots.",
    )
    how = p.add_mutually_exclusive_group()
    how.add_argument("--json", action="store_true", help="one JSON document for scripts")
    how.add_argument("--watch", action="store_true", help="a live view, every second, until Ctrl-C")
    p.add_argument("-V", "--version", action="version", version=f"%(prog)s {__version__}")
    args = p.parse_args(argv)
    _printable_output()
    from jst.ui import status

    if args.watch:
        from jst.ui import statusview

        return statusview.watch()
    sample = status.sample()
    if args.json:
        print(json.dumps(sample.to_json(), indent=2))
    else:
        from jst.ui import statusview

        statusview.print_once(sample)
    for problem in sample.problems:
        print(f"jst status: {problem}", file=sys.stderr)
    return 0 if sample.ok else 1


def add_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(
        prog="jst add",
        description="Hand magnet links and .torrent files to the running JSTorrent.",
        epilog="Without --wait, a link fails at once when no host runs. No browser is "
        "ever opened unless --launch is given.",
    )
    p.add_argument("links", nargs="+", metavar="LINK", help="magnet:?..., path.torrent, file://")
    p.add_argument(
        "--wait", type=_seconds, default=0.0, metavar="SECONDS",
        help="wait up to SECONDS for a host to start (default: do not wait)",
    )  # fmt: skip
    p.add_argument(
        "--launch", action="store_true",
        help="with no host running, open the browser on JSTorrent's launch page first "
        "(then wait --wait SECONDS, 10 by default)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="one JSON array of results on stdout")
    args = p.parse_args(argv)
    _printable_output()
    from jst.ui import add

    wait = args.wait if args.wait or not args.launch else 10.0
    return add.main(list(args.links), wait=wait, launch=args.launch, as_json=args.json)


def rpc_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(
        prog="jst rpc",
        description="JSON-RPC 2.0 over stdin/stdout, one JSON object per line. Methods: "
        "get_status, add_magnet, add_torrent, list_roots, stop_daemon.",
    )
    p.parse_args(argv)
    from jst.ui import rpc

    return rpc.main()
