"""``jst``: one umbrella command for every program (``jst io-daemon ...`` and so on)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

USAGE = """usage: jst <command> [args...]

commands:
  io-daemon      loopback HTTP + WebSocket server (same as jst-io-daemon)
  native-host    Chrome Native Messaging host (same as jst-native-host)
  link-handler   magnet:/.torrent handler (same as jst-link-handler)
  install        register jst with the browsers found here (and magnet:/.torrent)
  uninstall      remove exactly what install wrote
  doctor         check every browser can start jst; prints fixes
  status         what runs now: hosts, io-daemons, roots (--json, --watch)
  add            hand magnet links and .torrent files to the running JSTorrent
  rpc            JSON-RPC 2.0 on stdin/stdout for other front-ends
  service        run|start|stop|status the persistent io-daemon service (SERVICE.md)
"""


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
    if command in ("install", "uninstall", "doctor"):
        from jst.install.cli import main as install_main

        return install_main(command, rest)
    if command in ("status", "add", "rpc"):
        from jst.ui import cli as ui_cli

        ui_main = {"status": ui_cli.status_main, "add": ui_cli.add_main, "rpc": ui_cli.rpc_main}
        return ui_main[command](rest)
    if command == "link-handler":
        from jst.linkhandler.cli import main as link_main

        return link_main(rest)
    if command == "service":
        from jst.service.cli import main as service_main

        return service_main(rest)
    print(f"jst: unknown command {command!r}\n\n{USAGE}", file=sys.stderr, end="")
    return 2
