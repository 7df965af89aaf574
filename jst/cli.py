"""``jst``: one umbrella command for every program (``jst io-daemon ...`` and so on)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

USAGE = """usage: jst <command> [args...]

commands:
  io-daemon      loopback HTTP + WebSocket server (same as jst-io-daemon)
  native-host    Chrome Native Messaging host (same as jst-native-host)
  link-handler   magnet:/.torrent handler (same as jst-link-handler; not implemented yet)
"""


def _not_implemented(name: str) -> int:
    print(f"{name}: not implemented yet", file=sys.stderr)
    return 2


def native_host_main() -> int:
    from jst.host.cli import main as host_main

    return host_main()


def link_handler_main() -> int:
    return _not_implemented("jst-link-handler")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command in ("--version", "-V"):
        from jst import __version__

        print(f"jst {__version__}")
        return 0
    if command == "io-daemon":
        from jst.daemon.cli import main as daemon_main

        return daemon_main(rest, prog="jst io-daemon")
    if command == "native-host":
        from jst.host.cli import main as host_main

        return host_main(rest)
    if command == "link-handler":
        return link_handler_main()
    print(f"jst: unknown command {command!r}\n\n{USAGE}", file=sys.stderr, end="")
    return 2
