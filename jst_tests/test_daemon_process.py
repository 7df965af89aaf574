"""The io-daemon as a process: command line (§5.1), port line, lifecycle (§5.2)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jst_tests.daemonproc import DAEMON, DaemonEnv, read_port_line, running_daemon, spawn, stop
from jst_tests.httpclient import HttpClient


def run_cli(env: DaemonEnv, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*DAEMON, *args], env=env.environ(), capture_output=True, timeout=20, check=False
    )


def wait_exit(proc: subprocess.Popen[bytes], within: float) -> float:
    """Seconds until ``proc`` exits; fails (and the fixture reaps it) past ``within``."""
    start = time.monotonic()
    try:
        proc.wait(timeout=within)
    except subprocess.TimeoutExpired:
        pytest.fail(f"daemon still running {within} s later")
    return time.monotonic() - start


def test_port_line_is_the_only_stdout_and_the_port_serves(daemon_env: DaemonEnv) -> None:
    proc = spawn(daemon_env)
    try:
        port = read_port_line(proc)
        assert 0 < port < 65536
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 200 OK\r\n")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert proc.stdout is not None
        assert proc.stdout.read() == b""  # nothing after the port line, ever
    finally:
        stop(proc)


def test_installed_console_script_starts_with_flag_equals_value(daemon_env: DaemonEnv) -> None:
    script = Path(sys.executable).with_name("jst-io-daemon")
    assert script.exists(), "pip install -e . must install the jst-io-daemon console script"
    args = ["--port=0", f"--token={daemon_env.token}", f"--install-id={daemon_env.install_id}"]
    proc = spawn(daemon_env, args, command=[str(script)])
    try:
        assert read_port_line(proc) > 0
    finally:
        stop(proc)


def test_fixed_port_and_short_flags(daemon_env: DaemonEnv) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    args = ["-p", str(free_port), "-t", daemon_env.token, "--install-id", daemon_env.install_id]
    with running_daemon(daemon_env, args) as daemon:
        assert daemon.port == free_port


def test_binds_loopback_only(daemon_env: DaemonEnv) -> None:
    with running_daemon(daemon_env) as daemon:
        listening = Path("/proc/net/tcp").read_text() if sys.platform.startswith("linux") else ""
        if listening:
            hex_port = f"{daemon.port:04X}"
            lines = [ln.split() for ln in listening.splitlines()[1:]]
            local = [ln[1] for ln in lines if ln[1].endswith(":" + hex_port) and ln[3] == "0A"]
            assert local == ["0100007F:" + hex_port]


@pytest.mark.parametrize(
    "args",
    [
        [],  # no --token, no --install-id
        ["--token", "t"],  # no --install-id
        ["--install-id", "i"],  # no token from anywhere
        ["--token", "t", "--install-id", "i", "--bogus"],
        ["--token", "t", "--install-id", "i", "--port", "65536"],
        ["--token", "t", "--install-id", "i", "--port", "-1"],
        ["--token", "t", "--install-id", "i", "--parent-pid", "x"],
        ["--token", "", "--install-id", "i"],
    ],
)
def test_usage_errors_exit_2_with_a_message_and_no_port_line(
    daemon_env: DaemonEnv, args: list[str]
) -> None:
    result = run_cli(daemon_env, *args)
    assert result.returncode == 2
    assert result.stdout == b""
    assert b"usage:" in result.stderr


def test_help_and_version(daemon_env: DaemonEnv) -> None:
    assert b"--install-id" in run_cli(daemon_env, "--help").stdout
    version = run_cli(daemon_env, "--version")
    assert version.returncode == 0
    assert re.fullmatch(rb"jst-io-daemon \d+\.\d+\.\d+\n", version.stdout)


async def _authorized(port: int, token: str) -> bool:
    async with HttpClient(port) as client:
        return (
            await client.request("POST", "/control/ping", [("X-JST-Auth", token)])
        ).status == 200


async def test_token_from_environment_keeps_it_off_the_command_line(daemon_env: DaemonEnv) -> None:
    args = ["--install-id", daemon_env.install_id]
    with running_daemon(daemon_env, args, {"JST_IO_DAEMON_TOKEN": daemon_env.token}) as daemon:
        assert await _authorized(daemon.port, daemon_env.token)
        cmdline = Path(f"/proc/{daemon.proc.pid}/cmdline").read_bytes()
        assert daemon_env.token.encode() not in cmdline


async def test_token_from_stdin(daemon_env: DaemonEnv) -> None:
    args = ["--token-stdin", "--install-id", daemon_env.install_id]
    proc = spawn(daemon_env, args, stdin=subprocess.PIPE)
    try:
        assert proc.stdin is not None
        proc.stdin.write(daemon_env.token.encode() + b"\n")
        proc.stdin.close()
        proc.stdin = None
        port = read_port_line(proc)
        assert await _authorized(port, daemon_env.token)
        assert not await _authorized(port, "wrong")
    finally:
        stop(proc)


async def test_token_from_an_inherited_pipe_is_in_neither_environ_nor_cmdline(
    daemon_env: DaemonEnv,
) -> None:
    token_read, token_write = os.pipe()
    os.write(token_write, daemon_env.token.encode() + b"\n")
    os.close(token_write)
    args = ["--token-fd", str(token_read), "--install-id", daemon_env.install_id]
    proc = subprocess.Popen(  # noqa: ASYNC220 (started once, not awaited)
        [*DAEMON, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=daemon_env.environ(),
        pass_fds=(token_read,),
    )
    os.close(token_read)
    try:
        port = read_port_line(proc)
        assert await _authorized(port, daemon_env.token)
        assert not await _authorized(port, "wrong")
        for name in ("environ", "cmdline"):
            assert daemon_env.token.encode() not in Path(f"/proc/{proc.pid}/{name}").read_bytes()
        # It read the pipe and closed it: stdin (null device) is its only input.
        fds = {int(fd) for fd in os.listdir(f"/proc/{proc.pid}/fd")}
        assert not any(
            os.readlink(f"/proc/{proc.pid}/fd/{fd}").startswith("pipe:") for fd in fds - {1}
        )
    finally:
        stop(proc)


def test_port_in_use_is_an_error_not_a_second_listener(daemon_env: DaemonEnv) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(daemon_env, "--port", str(port), "--token", "t", "--install-id", "i")
    assert result.returncode == 1
    assert result.stdout == b""
    assert b"cannot listen" in result.stderr


async def test_starts_without_any_config_file(tmp_path: Path) -> None:
    env = DaemonEnv(tmp_path)  # no rpc-info.json at all
    with running_daemon(env) as daemon:
        async with HttpClient(daemon.port) as client:
            assert (await client.request("GET", "/health")).status == 200
            reply = await client.request(
                "POST", f"/write/{'0' * 16}", [*daemon.auth, ("X-Path-Base64", "eA==")], b"x"
            )
            assert reply.status == 403


async def test_log_file_is_written_in_the_config_dir(daemon_env: DaemonEnv) -> None:
    with running_daemon(daemon_env) as daemon:
        async with HttpClient(daemon.port) as client:
            assert (await client.request("GET", "/health")).status == 200
    log = daemon_env.config_dir / "jstorrent-native" / "io-daemon.log"
    assert "listening on 127.0.0.1" in log.read_text()


# Loaded by the first /io or /control session, /stream request or file request, never
# before the first /health answer, which a cold start waits for (issue 17).
LOADED_ON_FIRST_USE = (
    "wsproto",
    "h11",
    "jst.daemon.mux",
    "jst.daemon.iotcp",
    "jst.daemon.streams",
    "jst.daemon.streamhttp",
    "jst.daemon.control_ws",
    "jst.daemon.websocket",
    "jst.daemon.fileops",
    "jst.daemon.fastfile",
)


# A probe may ask to close (urllib does): that answer loads no h11 either.
@pytest.mark.parametrize("connection", ["keep-alive", "close"])
async def test_the_first_health_answer_loads_no_session_stream_or_file_module(
    daemon_env: DaemonEnv, connection: str
) -> None:
    importtime = [sys.executable, "-X", "importtime", "-m", "jst.daemon.cli"]
    proc = spawn(daemon_env, command=importtime)
    try:
        port = read_port_line(proc)
        async with HttpClient(port) as client:
            reply = await client.request("GET", "/health", [("Connection", connection)])
            assert reply.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.stderr is not None
        trace = proc.stderr.read().decode("utf-8", "replace")  # EOF: the daemon has exited
    finally:
        stop(proc)
    imported = {line.rsplit("|", 1)[-1].strip() for line in trace.splitlines() if "|" in line}
    assert "trio" in imported  # the trace is real
    assert sorted(imported.intersection(LOADED_ON_FIRST_USE)) == []


def test_unwritable_log_dir_is_not_fatal(tmp_path: Path) -> None:
    env = DaemonEnv(tmp_path)
    env.config_dir.mkdir()
    (env.config_dir / "jstorrent-native").write_text("a file where the app dir should be")
    with running_daemon(env) as daemon:
        assert daemon.port > 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("when", ["right after the port line", "while serving"])
async def test_signals_end_the_daemon_gracefully_within_2_s(
    daemon_env: DaemonEnv, signum: int, when: str
) -> None:
    with running_daemon(daemon_env) as daemon:
        if when == "while serving":
            async with HttpClient(daemon.port) as client:
                assert (await client.request("GET", "/health")).status == 200
        daemon.proc.send_signal(signum)
        assert wait_exit(daemon.proc, 2.0) < 2.0
        assert daemon.proc.returncode == 0


async def test_control_shutdown_answers_200_then_exits_0(daemon_env: DaemonEnv) -> None:
    with running_daemon(daemon_env) as daemon:
        async with HttpClient(daemon.port) as client:
            reply = await client.request("POST", "/control/shutdown", daemon.auth)
        assert reply.status == 200
        wait_exit(daemon.proc, 2.0)
        assert daemon.proc.returncode == 0


def test_exits_within_1_s_after_its_parent_is_killed(daemon_env: DaemonEnv, tmp_path: Path) -> None:
    # A parent process that starts the daemon and then just waits; we SIGKILL it.
    parent_script = tmp_path / "parent.py"
    parent_script.write_text(
        "import os, subprocess, sys, time\n"
        "argv = sys.argv[1:] + ['--parent-pid', str(os.getpid())]\n"
        "child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)\n"
        "print(child.pid, child.stdout.readline().decode().strip(), flush=True)\n"
        "time.sleep(60)\n"
    )
    args = [*DAEMON, *daemon_env.daemon_args()]
    parent = subprocess.Popen([sys.executable, str(parent_script), *args], stdout=subprocess.PIPE,
                              env=daemon_env.environ())  # fmt: skip
    daemon_pid = 0
    try:
        assert parent.stdout is not None
        daemon_pid, port = (int(x) for x in parent.stdout.readline().split())
        assert port > 0
        parent.kill()
        parent.wait()
        start = time.monotonic()
        while _pid_running(daemon_pid):
            if time.monotonic() - start > 1.0:
                pytest.fail("daemon outlived its parent by more than 1 s")
            time.sleep(0.02)
    finally:
        stop(parent)
        if daemon_pid and _pid_running(daemon_pid):
            os.kill(daemon_pid, signal.SIGKILL)  # the daemon we started, through our parent


def _pid_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting for its reaper."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_a_parent_pid_that_is_already_gone_ends_the_daemon(daemon_env: DaemonEnv) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    args = ["--token", "t", "--install-id", "i", "--parent-pid", str(gone.pid)]
    proc = spawn(daemon_env, args)
    try:
        read_port_line(proc)
        wait_exit(proc, 2.0)
        assert proc.returncode == 0
    finally:
        stop(proc)


def test_umbrella_command_runs_the_daemon(daemon_env: DaemonEnv) -> None:
    jst = shutil.which("jst", path=str(Path(sys.executable).parent))
    assert jst is not None
    result = subprocess.run(
        [jst, "io-daemon", "--version"], capture_output=True, timeout=20, check=False
    )
    assert result.returncode == 0
    assert result.stdout.startswith(b"jst io-daemon ")
    host = subprocess.run(
        [jst, "native-host", "--version"], capture_output=True, timeout=20, check=False
    )
    assert host.returncode == 0
    assert host.stdout.startswith(b"jst-native-host ")
    usage = subprocess.run([jst, "link-handler"], capture_output=True, timeout=20, check=False)
    assert usage.returncode == 2  # the link-handler needs its one argument
    assert b"the following arguments are required: target" in usage.stderr


HOST_LINES = [
    # jst-native-host (launch.spawn) on Unix, and with --port where fds cannot be passed
    ["--listen-fd", "3", "--parent-pid", "77", "--install-id", "", "--host-control",
     "unix:/run/x/control", "--token-fd", "4"],
    ["--port", "0", "--parent-pid", "77", "--install-id", "abc", "--host-control",
     "tcp:127.0.0.1:5000"],
    # jst service: its link and an idle bound
    ["--listen-fd", "5", "--install-id", "i", "--service-link", "unix:/s", "--idle-exit", "30"],
    ["--install-id", "x", "--idle-exit", "1e3", "--port", "65535"],
]  # fmt: skip
OTHER_LINES = [
    ["--install-id", "x", "--token", "t"],  # a token on argv: argparse's business
    ["--install-id=x"],
    ["--install-id", "x", "--install-id", "y"],
    ["--install-id", "-x"],
    ["--port", "65536", "--install-id", "x"],
    ["--port", "-1", "--install-id", "x"],
    ["--listen-fd", "٣", "--install-id", "x"],  # a digit, but not ASCII
    ["--idle-exit", "soon", "--install-id", "x"],
    ["--parent-pid", "1"],  # no --install-id
    ["--install", "x"],  # an abbreviation
    ["--version"],
    ["--install-id"],
]


@pytest.mark.parametrize("argv", HOST_LINES)
def test_the_hosts_command_lines_parse_as_argparse_parses_them(argv: list[str]) -> None:
    """The daemon reads its host's command line without argparse (issue 17: ~7 ms of
    every cold start); what it reads must be exactly what argparse reads."""
    from jst.daemon.cli import parse_pairs, parser

    fast = parse_pairs(argv)
    assert fast is not None
    assert vars(fast) == vars(parser().parse_args(argv))


@pytest.mark.parametrize("argv", OTHER_LINES)
def test_every_other_command_line_is_left_to_argparse(argv: list[str]) -> None:
    from jst.daemon.cli import parse_pairs

    assert parse_pairs(argv) is None
