"""``jst status``: its table, ``--json``, ``--watch`` and exit statuses, against real hosts."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from jst_tests.hostproc import HostEnv, HostProcess, kill_if_alive, running_host
from jst_tests.ioclient import echo_handler, io_session, start_tcp_server

JST = str(Path(sys.executable).parent / "jst")


def status(env: HostEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [JST, "status", *args], capture_output=True, text=True, env=env.environ(COLUMNS="200"),
        timeout=60, check=False,
    )  # fmt: skip


def status_json(env: HostEnv) -> tuple[int, dict[str, Any]]:
    result = status(env, "--json")
    doc: dict[str, Any] = json.loads(result.stdout)
    return result.returncode, doc


@pytest.fixture
def host(host_env: HostEnv, tmp_path: Path) -> Iterator[HostProcess]:
    """A host that shook hands (so it runs a daemon) and has one download root."""
    folder = tmp_path / "downloads"
    folder.mkdir()
    host_env.picker_answer.write_text(str(folder))
    with running_host(host_env) as h:
        h.handshake()
        assert h.request({"op": "pickDownloadDirectory"})["ok"]
        yield h


def test_nothing_running(host_env: HostEnv) -> None:
    result = status(host_env)
    assert result.returncode == 0, result.stderr
    assert "no host running" in result.stdout
    assert "daemons: none running" in result.stdout
    assert "service: not running" in result.stdout
    code, doc = status_json(host_env)
    assert code == 0
    assert (doc["ok"], doc["hosts"], doc["daemons"], doc["roots"]) == (True, [], [], [])


def test_a_host_its_daemon_and_roots(host_env: HostEnv, host: HostProcess, tmp_path: Path) -> None:
    daemon_pid = host.daemon_pid()
    code, doc = status_json(host_env)
    assert code == 0, doc["problems"]
    (h,) = doc["hosts"]
    assert (h["pid"], h["install_id"], h["answering"]) == (host.pid, host_env.install_id, True)
    assert h["extension_id"] == "abcdefghijklmnopabcdefghijklmnop"
    (d,) = doc["daemons"]
    assert (d["pid"], d["parent_pid"], d["install_id"]) == (
        daemon_pid,
        host.pid,
        host_env.install_id,
    )
    assert d["port"] == host.handshake()["payload"]["port"]
    assert set(d["stats"]) >= {"ws_connections", "tcp_sockets", "bytes_sent", "bytes_received"}
    assert d["rate_received"] == 0  # sampled twice, nothing moved
    (root,) = doc["roots"]
    assert (root["path"], root["available"]) == (str(tmp_path / "downloads"), True)
    text = status(host_env)
    assert text.returncode == 0
    for shown in (str(host.pid), str(daemon_pid), str(d["port"]), root["key"], "yes"):
        assert shown in text.stdout
    (tmp_path / "downloads").rmdir()  # an unplugged drive: shown, not an error
    code, doc = status_json(host_env)
    assert code == 0
    assert doc["roots"][0]["available"] is False


async def test_io_sessions_sockets_and_bytes_are_counted(
    host_env: HostEnv, host: HostProcess
) -> None:
    info = host.handshake()["payload"]
    async with trio.open_nursery() as nursery:
        echo_port = await start_tcp_server(nursery, echo_handler)
        async with io_session(info["port"], info["token"]) as io:
            assert await io.connect(1, echo_port)
            await io.tcp_send(1, b"x" * 5000)
            assert await io.receive_exactly(1, 5000) == b"x" * 5000
            _, doc = await trio.to_thread.run_sync(status_json, host_env)
        nursery.cancel_scope.cancel()
    stats = doc["daemons"][0]["stats"]
    assert (stats["ws_connections"], stats["tcp_sockets"]) == (1, 1)
    assert (stats["bytes_sent"], stats["bytes_received"]) == (5000, 5000)


def test_unreadable_state_exits_1_with_the_reason(host_env: HostEnv) -> None:
    host_env.rpc_info.parent.mkdir(parents=True)
    host_env.rpc_info.write_text("{not json")
    result = status(host_env)
    assert result.returncode == 1
    assert "cannot parse" in result.stderr
    code, doc = status_json(host_env)
    assert code == 1
    assert doc["ok"] is False
    assert any("cannot parse" in p for p in doc["problems"])


def test_a_frozen_host_is_a_problem(host_env: HostEnv, host: HostProcess) -> None:
    os.kill(host.pid, signal.SIGSTOP)
    try:
        code, doc = status_json(host_env)
    finally:
        os.kill(host.pid, signal.SIGCONT)
    assert code == 1
    assert doc["hosts"][0]["answering"] is False
    assert any(f"host pid {host.pid}" in p for p in doc["problems"])


def test_usage_errors_exit_2(host_env: HostEnv) -> None:
    assert status(host_env, "--json", "--watch").returncode == 2
    assert status(host_env, "--nope").returncode == 2


def read_pty(fd: int, until: bytes, times: int, seconds: float = 30) -> bytes:
    """What the terminal showed once ``until`` appeared ``times`` times (or time ran out)."""
    out = bytearray()
    deadline = time.monotonic() + seconds
    while out.count(until) < times and (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return bytes(out)


def ctrl_c_as_from_a_terminal() -> None:
    """In the child: SIGINT as a shell at a terminal leaves it. A suite run as a
    background job of a non-interactive shell inherits SIGINT ignored (POSIX), and
    Python then never turns it into KeyboardInterrupt: Ctrl-C could not be tested."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_watch_redraws_in_place_until_ctrl_c(host_env: HostEnv, host: HostProcess) -> None:
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [JST, "status", "--watch"], stdin=child, stdout=child, stderr=child,
        env=host_env.environ(COLUMNS="160", LINES="50", TERM="xterm"), start_new_session=True,
        preexec_fn=ctrl_c_as_from_a_terminal,
    )  # fmt: skip
    os.close(child)
    try:
        shown = read_pty(main, b"download roots", 3)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main)
    assert str(host.pid) in shown.decode("utf-8", "replace")
    # Redrawn in place (cursor up / erase line), not a scroll of tables: one header.
    assert b"\x1b[2K" in shown or b"\x1b[1A" in shown
    assert shown.count(b"download roots") >= 3  # redrawn at least twice


def test_the_host_and_the_daemon_do_not_import_rich() -> None:
    code = (
        "import sys, jst.cli, jst.host.main, jst.daemon.main, jst.linkhandler.main, jst.ui.rpc;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'rich'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def write_profile(path: Path, pid: int, install_id: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "extension_id": "e", "install_id": install_id, "pid": pid, "port": 9, "token": "t",
        "started": 5, "last_used": 5, "browser": {"name": "b", "binary": "/b"},
        "download_roots": [{"key": "k", "path": str(path.parent), "display_name": "d"}],
    }  # fmt: skip
    path.write_text(json.dumps({"version": 1, "profiles": [profile]}))


def test_a_stale_profile_whose_pid_is_another_program_is_no_host(host_env: HostEnv) -> None:
    write_profile(host_env.rpc_info, os.getpid(), "stale")  # this pytest is alive, not a host
    code, doc = status_json(host_env)
    assert code == 0, doc["problems"]
    assert doc["hosts"] == []
    assert [r["install_id"] for r in doc["roots"]] == ["stale"]  # its roots are still shown


def test_the_service_is_shown_through_jst_service_query_status(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The interface assumed for issue 15: ``jst.service.query_status(timeout=...)``
    returns None (no service) or a dict; tokens in it are used and never shown."""
    import types

    from jst.ui import status as status_mod

    fake = types.ModuleType("jst.service")
    answers: list[Any] = [None]
    fake.query_status = lambda timeout: answers[0]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "jst.service", fake)
    rpc_info = tmp_path / "rpc-info.json"
    sample = status_mod.gather(rpc_info=rpc_info)
    assert sample.service == {"available": True, "running": False}
    answers[0] = {"pid": 2**22 + 7, "version": "x",
                  "installs": [{"install_id": "i", "port": 1, "token": "secret"}]}  # fmt: skip
    sample = status_mod.gather(rpc_info=rpc_info)
    assert sample.service["running"] is True
    assert sample.service["installs"] == [{"install_id": "i", "port": 1}]
    assert "secret" not in json.dumps(sample.to_json())

    def broken(timeout: float) -> Any:
        raise OSError("service.sock refused")

    fake.query_status = broken  # type: ignore[attr-defined]
    sample = status_mod.gather(rpc_info=rpc_info)
    assert not sample.ok
    assert sample.problems == ["cannot query the service: service.sock refused"]
    monkeypatch.setitem(sys.modules, "jst.service", types.ModuleType("jst.service"))
    assert status_mod.gather(rpc_info=rpc_info).service == {"available": False, "running": False}


def test_watch_into_a_pipe_prints_one_sample_per_second(host_env: HostEnv) -> None:
    proc = subprocess.Popen(
        [JST, "status", "--watch"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=host_env.environ(), preexec_fn=ctrl_c_as_from_a_terminal,
    )  # fmt: skip
    lines: list[str] = []
    got: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None

    def read() -> None:
        for line in proc.stdout or []:
            got.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        deadline = time.monotonic() + 30
        while sum("no host running" in x for x in lines) < 2 and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                lines.append(got.get(timeout=1))
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
        time.sleep(0.2)  # the reader thread takes what is left
        out = "".join(iter(lambda: got.get_nowait() if not got.empty() else "", ""))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert sum(x.startswith("jst status at ") for x in lines) == 2
    assert "\x1b[" not in "".join(lines) + out  # no escape codes into a file


def test_a_daemon_started_with_token_on_its_command_line_is_read(host_env: HostEnv) -> None:
    """As the original's host starts its daemon (``--token`` on argv)."""
    daemon = str(Path(sys.executable).parent / "jst-io-daemon")
    code = (
        "import subprocess, sys, time\n"
        f"d = subprocess.Popen([{daemon!r}, '--token', 'T0K', '--install-id', 'orig'],"
        " stdout=subprocess.DEVNULL)\n"
        "print(d.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    fake_host = subprocess.Popen(
        [sys.executable, "-c", code, "jstorrent-native-host"], stdout=subprocess.PIPE,
        text=True, env=host_env.environ(),
    )  # fmt: skip
    daemon_pid = 0
    try:
        assert fake_host.stdout is not None
        daemon_pid = int(fake_host.stdout.readline())
        write_profile(host_env.rpc_info, fake_host.pid, "orig")
        doc: dict[str, Any] = {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # until the daemon listens
            _, doc = status_json(host_env)
            if doc["daemons"] and doc["daemons"][0]["stats"]:
                break
            time.sleep(0.2)
        (d,) = doc["daemons"]
        assert (d["pid"], d["install_id"], d["parent_pid"]) == (daemon_pid, "orig", fake_host.pid)
        assert d["stats"]["ws_connections"] == 0
        assert "T0K" not in json.dumps(doc)
        # The stand-in host serves no /health: that, and only that, is a problem.
        assert [p for p in doc["problems"] if "daemon" in p] == []
        assert any(f"host pid {fake_host.pid}" in p for p in doc["problems"])
    finally:
        if daemon_pid:
            kill_if_alive(daemon_pid)
        fake_host.kill()
        fake_host.wait()
