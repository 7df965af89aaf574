"""``jst-io-daemon``: the command line of §5.1, then the port line, then the server.

Startup order is chosen for the time to the port line: parse arguments, bind the
listening socket, print the port, and only then import trio and the server (~120 ms).
Connections that arrive meanwhile wait in the kernel's accept queue, so a client that
reads the port and connects at once is served as soon as the loop runs.

Token sources (§9.19: a token on argv is visible to every user in ``ps``):
  --token T          as the original; still accepted
  --token-stdin      read the token from the first line of standard input
  --token-fd N       read it from inherited descriptor N up to a newline or EOF, then
                     close N (what jst-native-host uses: a pipe, so the token is in
                     neither our command line nor ``/proc/<pid>/environ``)
  JST_IO_DAEMON_TOKEN  environment variable. We drop it from ``os.environ`` once read,
                     so our children do not inherit it, but the kernel's copy of our
                     initial environment (``/proc/<pid>/environ``, readable by the same
                     user) keeps it for our whole life: prefer a pipe.
The first one given wins, in that order. None, or an empty token, is a usage error (2).

With ``--host-control`` (set by jst-native-host) we serve only once the host's first
``config`` is in effect (see ``hostlink.py``): the host starts us before it knows the
profile, so that our imports run while it does its own work.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import sys
import types

from jst import __version__

TYPE_CHECKING = False  # not ``typing``: nothing before the port line imports it
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence
    from typing import Any, NoReturn

TOKEN_ENV = "JST_IO_DAEMON_TOKEN"  # noqa: S105 (a variable name, not a secret)
DEV_ORIGINS_ENV = "JSTORRENT_DEV_ORIGINS"
LOG_FILE_NAME = "io-daemon.log"
LISTEN_BACKLOG = 1024  # browsers open bursts of parallel connections
MAX_TOKEN = 4096  # a token is a 36-character UUID; read no further than this


def _unsigned(bits: int) -> Callable[[str], int]:
    limit = (1 << bits) - 1

    def parse(text: str) -> int:
        if not text.isascii() or not text.isdigit() or int(text) > limit:
            import argparse

            raise argparse.ArgumentTypeError(f"must be an integer from 0 to {limit}")
        return int(text)

    parse.__name__ = f"u{bits}"
    return parse


def parser(prog: str = "jst-io-daemon") -> argparse.ArgumentParser:
    import argparse

    p = argparse.ArgumentParser(
        prog=prog,
        description="jst io-daemon: loopback HTTP + WebSocket server for the JSTorrent extension.",
        epilog=f"The token may instead come from --token-stdin, --token-fd or ${TOKEN_ENV}.",
    )
    p.add_argument(
        "-p",
        "--port",
        type=_unsigned(16),
        default=0,
        help="TCP port on 127.0.0.1 (0 = any free port)",
    )
    p.add_argument("-t", "--token", help="auth token for HTTP and WebSocket clients")
    p.add_argument(
        "--token-stdin", action="store_true", help="read the token from the first line of stdin"
    )
    p.add_argument(
        "--token-fd",
        type=_unsigned(31),
        metavar="FD",
        help="read the token from this inherited descriptor (a pipe) up to a newline or EOF",
    )
    p.add_argument("--parent-pid", type=_unsigned(32), help="exit when this process exits")
    p.add_argument("--install-id", required=True, help="selects the profile in rpc-info.json")
    p.add_argument(
        "--listen-fd",
        type=_unsigned(31),
        metavar="FD",
        help="serve on this inherited listening socket instead of binding --port "
        "(set by jst-native-host so a restarted daemon keeps its port without a gap)",
    )
    p.add_argument(
        "--host-control",
        metavar="ADDRESS",
        help="the native-host's control channel (unix:PATH or tcp:127.0.0.1:PORT); "
        "set by jst-native-host, see jst/control.py",
    )
    p.add_argument(
        "--service-link",
        metavar="ADDRESS",
        help="service mode: the jst service's channel (unix:PATH); serves /control, /roots, "
        "/open (set by jst service, see jst/daemon/control_ws.py)",
    )
    p.add_argument(
        "--idle-exit",
        type=float,
        metavar="SECONDS",
        help="exit 0 after this long with no HTTP request and no WebSocket session",
    )
    p.add_argument("-V", "--version", action="version", version=f"%(prog)s {__version__}")
    return p


# What jst-native-host and jst service write (launch.spawn): ``--option value`` pairs, each
# option once. Parsed without argparse, whose import and parser construction cost ~7 ms of
# every cold start (issue 17); any other form, a bad value, ``--help`` or ``--version``
# goes to argparse, which gives the same result or the same error as always.
_PAIRS: dict[str, tuple[str, Callable[[str], object]]] = {
    "--port": ("port", _unsigned(16)),
    "--listen-fd": ("listen_fd", _unsigned(31)),
    "--token-fd": ("token_fd", _unsigned(31)),
    "--parent-pid": ("parent_pid", _unsigned(32)),
    "--install-id": ("install_id", str),
    "--host-control": ("host_control", str),
    "--service-link": ("service_link", str),
    "--idle-exit": ("idle_exit", float),
}
_DEFAULTS: dict[str, object] = {
    "port": 0,
    "token": None,
    "token_stdin": False,
    "token_fd": None,
    "parent_pid": None,
    "install_id": None,
    "listen_fd": None,
    "host_control": None,
    "service_link": None,
    "idle_exit": None,
}


def parse_pairs(argv: Sequence[str]) -> types.SimpleNamespace | None:
    """``argv`` as ``parser().parse_args`` reads it, if it is plain option/value pairs
    (``--install-id`` among them); ``None`` for anything else."""
    if len(argv) % 2:
        return None
    values = dict(_DEFAULTS)
    seen: set[str] = set()
    for option, value in zip(argv[::2], argv[1::2], strict=True):
        spec = _PAIRS.get(option)
        if spec is None or option in seen or value.startswith("-"):
            return None
        seen.add(option)
        try:
            values[spec[0]] = spec[1](value)
        except Exception:  # argparse parses it again and says what is wrong
            return None
    if "--install-id" not in seen:
        return None
    return types.SimpleNamespace(**values)


def read_token_fd(fd: int) -> str:
    """The first line readable from ``fd`` (at most ``MAX_TOKEN`` bytes); closes ``fd``."""
    data = b""
    try:
        while b"\n" not in data and len(data) <= MAX_TOKEN:
            chunk = os.read(fd, MAX_TOKEN + 1)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    return data.split(b"\n", 1)[0].decode("utf-8", "replace").rstrip("\r")


def read_token(args: Any, fail: Callable[[str], NoReturn]) -> str:
    token: str | None = args.token
    if token is None and args.token_stdin:
        token = sys.stdin.readline().rstrip("\r\n")
    if token is None and args.token_fd is not None:
        try:
            token = read_token_fd(args.token_fd)
        except OSError as exc:
            fail(f"cannot read the token from fd {args.token_fd}: {exc.strerror or exc}")
    if token is None:
        token = os.environ.get(TOKEN_ENV)
    os.environ.pop(TOKEN_ENV, None)
    if token is None:
        fail(
            "the following arguments are required: --token "
            f"(or --token-stdin, --token-fd, ${TOKEN_ENV})"
        )
    if not token:
        fail("the token must not be empty")
    return token


def bind_listener(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if sys.platform == "win32":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)  # type: ignore[attr-defined]
    else:
        # Lets a restarted daemon take back its port while old connections sit in
        # TIME_WAIT; it does not let two live listeners share a port on Linux or macOS.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(LISTEN_BACKLOG)
    return sock


def inherited_listener(fd: int) -> socket.socket:
    """The listening socket our parent bound for us; it must be TCP on loopback."""
    sock = socket.socket(fileno=fd)
    address = sock.getsockname()
    if (
        sock.family not in (socket.AF_INET, socket.AF_INET6)
        or sock.type != socket.SOCK_STREAM
        or address[0] not in ("127.0.0.1", "::1")
    ):
        sock.detach()
        raise OSError(f"fd {fd} is not a TCP socket on loopback ({address!r})")
    return sock


def announce_port(port: int) -> None:
    """Print the port line (§5.2 step 6), then point fd 1 at stderr for good.

    After this nothing (not even a stray print in a library) can reach stdout; the
    host reads exactly one line from it and closes the pipe.
    """
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())


def main(argv: Sequence[str] | None = None, prog: str = "jst-io-daemon") -> int:
    args: Any = parse_pairs(sys.argv[1:] if argv is None else argv)
    if args is None:
        args = parser(prog).parse_args(argv)

    def fail(message: str) -> NoReturn:
        parser(prog).error(message)

    if args.idle_exit is not None and not args.idle_exit > 0:
        fail("--idle-exit must be a positive number of seconds")
    token = read_token(args, fail)
    # From here on SIGINT/SIGTERM must mean "exit 0 gracefully", even in the ~150 ms
    # before trio runs (a host may stop us right after reading the port line): remember
    # them now, and main.watch_signals acts on what arrived early.
    early_signals: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda received, _frame: early_signals.append(received))
    if hasattr(signal, "SIGXFSZ"):
        # Past RLIMIT_FSIZE a write must fail with EFBIG (answered 507), not kill us.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        if args.listen_fd is not None:
            listener = inherited_listener(args.listen_fd)
        else:
            listener = bind_listener(args.port)
    except OSError as exc:
        print(
            f"{prog}: cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    port = listener.getsockname()[1]
    announce_port(port)

    from jst.codecache import GeneratedCodeCache
    from jst.fastimport import import_trio

    # No cyclic collection while the modules load: the ~60 young and a few middle
    # collections it would run walk nothing but fresh module objects (~20 ms of the time
    # to the first answer, issue 17). gctune.configure_gc freezes them and turns it back on.
    gc.disable()
    code_cache = GeneratedCodeCache.open("io-daemon")
    try:
        import_trio()

        # The server's modules too, while the code cache is open, and so that with
        # --host-control we serve as soon as the config arrives.
        import jst.daemon.server
        from jst import config, logs
        from jst.daemon.http import CorsPolicy
        from jst.daemon.main import run
        from jst.daemon.state import ConfigLoadError, DaemonState

        if args.service_link is not None:
            import jst.daemon.control_ws  # noqa: F401  (service mode's routes, see main.py)
    finally:
        if code_cache is not None:
            code_cache.close()

    log = logs.setup("io-daemon", config.app_dir() / LOG_FILE_NAME)
    log.info(
        "jst-io-daemon %s listening on 127.0.0.1:%d (pid %d)",
        __version__,
        port,
        os.getpid(),
    )
    state = DaemonState(
        token=token.encode("utf-8"),
        install_id=args.install_id,
        rpc_info_path=config.rpc_info_path(),
        cors=CorsPolicy.from_dev_origins(os.environ.get(DEV_ORIGINS_ENV)),
    )
    if args.host_control is None:
        try:
            state.load_config()
        except ConfigLoadError as exc:
            log.warning("starting without download roots: %s", exc)
    else:
        from jst.daemon.hostlink import HostLinkLost, await_first_config

        try:
            configured = await_first_config(
                args.host_control, state, port, lambda: bool(early_signals)
            )
        except HostLinkLost as exc:
            log.error("%s", exc)
            return 1
        if not configured:
            log.info("exiting before serving: %s", "signal" if early_signals else "host gone")
            return 0
    return run(
        state, listener.detach(), port, args.parent_pid, args.host_control, early_signals,
        service_link=args.service_link, idle_exit=args.idle_exit,
    )  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
