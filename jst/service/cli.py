"""``jst service run|start|stop|status`` (SERVICE.md §1).

``run`` is the service in the foreground (what a systemd unit or a LaunchAgent runs);
``start`` runs it detached unless one answers already; ``stop`` asks it to end (its
daemons end with it); ``status`` prints what it supervises (exit 3 when none runs, as
``systemctl status`` does).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence

from jst.service import client, paths

LOG_FILE_NAME = "jst-service.log"
STOP_TIMEOUT = 5.0
NOT_RUNNING = 3


def parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="the persistent jst io-daemon service")
    sub = p.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="run the service in the foreground")
    start = sub.add_parser("start", help="start the service detached (if none runs)")
    for sp in (run, start):
        sp.add_argument(
            "--launch-browser",
            action="store_true",
            help="start the recorded browser once, in the background (SERVICE.md §4)",
        )
        sp.add_argument(
            "--daemon-idle-exit",
            type=_seconds,
            metavar="SECONDS",
            help="io-daemons exit after this long without a client (restarted on demand)",
        )
        sp.add_argument(
            "--idle-exit",
            type=_seconds,
            metavar="SECONDS",
            help="the service exits after this long with no io-daemon running",
        )
    sub.add_parser("stop", help="stop the service and its io-daemons")
    st = sub.add_parser("status", help="is it running, and what does it supervise")
    st.add_argument("--json", action="store_true", help="print the status as JSON")
    return p


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def _options(args: argparse.Namespace) -> list[str]:
    extra: list[str] = []
    if args.launch_browser:
        extra.append("--launch-browser")
    if args.daemon_idle_exit is not None:
        extra += ["--daemon-idle-exit", f"{args.daemon_idle_exit:g}"]
    if args.idle_exit is not None:
        extra += ["--idle-exit", f"{args.idle_exit:g}"]
    return extra


def _take_lock(path: os.PathLike[str]) -> int | None:
    """The service lock (kept for the process's life), or ``None`` if another holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    if sys.platform == "win32":
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            os.close(fd)
            return None
        return fd
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def run(args: argparse.Namespace) -> int:
    runtime = paths.runtime_dir()
    lock_fd = _take_lock(runtime / paths.LOCK_NAME)
    if lock_fd is None:
        print("jst service: already running", file=sys.stderr)
        return 0
    import trio

    from jst import config, logs
    from jst.host.store import RpcInfoStore
    from jst.service.main import Service, bind_service_socket

    logs.setup("service", config.app_dir() / LOG_FILE_NAME)
    service = Service(
        store=RpcInfoStore(config.rpc_info_path()),
        runtime=runtime,
        launch_browser=args.launch_browser,
        daemon_idle_exit=args.daemon_idle_exit,
        idle_exit=args.idle_exit,
    )
    sock_path = paths.socket_path(runtime)

    async def main() -> None:
        listener = await bind_service_socket(sock_path)
        try:
            await service.run(listener)
        finally:
            await listener.aclose()

    try:
        trio.run(main)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(sock_path)  # we hold the lock: it is ours
        os.close(lock_fd)
    return 0


def _status() -> dict[str, object] | None:
    try:
        return client.request({"op": "status"}, timeout=2.0)
    except (client.ServiceUnreachable, client.ServiceError, paths.RuntimeDirError):
        return None


def _print_status(status: dict[str, object]) -> None:
    print(f"jst service {status.get('version')} running, pid {status.get('pid')}")
    print(f"  runtime dir: {status.get('runtime_dir')}")
    installs = status.get("installs")
    if not isinstance(installs, list) or not installs:
        print("  no io-daemon yet (one starts on the first endpoint request)")
        return
    for item in installs:
        if isinstance(item, dict):
            print(
                f"  install {item.get('install_id')}: io-daemon {item.get('state')} "
                f"on 127.0.0.1:{item.get('port')}, {item.get('control_clients')} /control "
                f"client(s), {item.get('kept_events')} kept event(s)"
            )


def main(argv: Sequence[str] | None = None, prog: str = "jst service") -> int:
    args = parser(prog).parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return _main(args)
    except paths.RuntimeDirError as exc:
        print(f"jst service: cannot use the runtime directory: {exc}", file=sys.stderr)
        return 1


def _main(args: argparse.Namespace) -> int:
    if args.action == "run":
        return run(args)
    if args.action == "start":
        if client.answers() or client.ensure_service(extra=_options(args)):
            status = _status()
            if status is not None:
                _print_status(status)
            return 0
        print("jst service: did not start within 3 s (see jst-service.log)", file=sys.stderr)
        return 1
    if args.action == "stop":
        try:
            reply = client.request({"op": "stop"}, timeout=2.0)
        except (client.ServiceUnreachable, client.ServiceError):
            print("jst service: not running")
            return 0
        deadline = time.monotonic() + STOP_TIMEOUT
        while client.answers() and time.monotonic() < deadline:
            time.sleep(0.05)
        print(f"jst service: stopped (pid {reply.get('pid')})")
        return 0
    status = _status()
    if status is None:
        if args.json:
            print(json.dumps({"running": False}))
        else:
            print("jst service: not running")
        return NOT_RUNNING
    if args.json:
        print(json.dumps({"running": True, **status}))
    else:
        _print_status(status)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
