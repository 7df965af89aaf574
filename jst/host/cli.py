"""``jst-native-host``: what Chrome runs for ``connectNative("com.jstorrent.native")``.

Chrome passes the caller's origin (``chrome-extension://<id>/``) and, on Windows,
``--parent-window=<n>``; every argument is accepted and only the origin is used (§2.8).
``--version`` and ``--help`` alone on the command line are answered for humans; they
never come from a browser.

Startup order is chosen for the extension's wait (issue 17): start the io-daemon first
(``launch.prelaunch``: no trio, a few ms; its stdin and stdout are the null device, so
it never sees the browser's pipes), then import trio and the rest of the host, so that
the daemon's start and ours overlap.
"""

from __future__ import annotations

import gc
import sys

from jst import __version__

TYPE_CHECKING = False  # not ``typing``: nothing before the daemon's start imports it
if TYPE_CHECKING:
    from collections.abc import Sequence

LOG_FILE_NAME = "jst-native-host.log"
USAGE = """usage: jst-native-host [chrome-extension://<id>/] [--parent-window=<n>]

The JSTorrent Native Messaging host. Browsers start it; it speaks length-prefixed JSON
on stdin/stdout and is not meant to be run by hand (try `jst doctor`).
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args in (["--version"], ["-V"]):
        print(f"jst-native-host {__version__}")
        return 0
    if args in (["--help"], ["-h"]):
        print(USAGE, end="")
        return 0

    # No cyclic collection while the modules load (as the daemon, see its cli.py): the
    # collections it would run walk nothing but fresh module objects. Turned back on,
    # with those objects frozen out of its way, before the host runs.
    gc.disable()

    from jst.host import oneshot

    # First: a one-shot get_browser_endpoint (SERVICE.md §2) asks the service and exits,
    # so it must not start a daemon of its own. Chrome writes its first message at
    # once, so the default mode does not wait here.
    consumed, one_shot = oneshot.peek_first_frame(0)
    if one_shot is not None:
        return oneshot.run(one_shot, args)

    from jst.fdlimit import raise_open_file_limit
    from jst.host import launch

    raise_open_file_limit()  # before the daemon starts: it inherits the raised limit
    prelaunched = launch.prelaunch()

    from jst.codecache import GeneratedCodeCache
    from jst.fastimport import import_trio

    code_cache = GeneratedCodeCache.open("native-host")
    try:
        import_trio()

        import trio

        from jst.host import stdio

        # From here on nothing but our frames reaches Chrome's pipe, not even a stray
        # print in a library imported below.
        in_fd, out_fd = stdio.take_stdio()

        from jst import config, logs
        from jst.host.main import Host
        from jst.host.store import RpcInfoStore
    finally:
        if code_cache is not None:
            code_cache.close()

    logs.setup("native-host", config.app_dir() / LOG_FILE_NAME)
    in_stream = stdio.FirstRead(oneshot.prefixed(consumed, stdio.receive_stream(in_fd)))
    host = Host(
        in_stream=in_stream,
        out_stream=stdio.send_stream(out_fd),
        store=RpcInfoStore(config.rpc_info_path()),
        argv=args,
        prelaunched=prelaunched,
        # A first frame already waiting is read before the startup write: if it is the
        # handshake, its write of rpc-info.json covers the startup one (issue 17).
        first_read=in_stream.done if stdio.input_waiting(in_fd) else None,
    )
    gc.freeze()
    gc.enable()
    trio.run(host.run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
