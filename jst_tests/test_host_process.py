"""jst-native-host as Chrome runs it: a real process over its stdio, a real daemon behind it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from jst_tests.hostproc import (
    EXTENSION_ID,
    ORIGIN,
    HostEnv,
    HostProcess,
    gone_within,
    http,
    running_host,
)


@pytest.fixture
def host(host_env: HostEnv) -> Iterator[HostProcess]:
    with running_host(host_env) as h:
        yield h


def daemon_get(info: dict[str, Any], path: str, **headers: str) -> tuple[int, bytes]:
    payload = info["payload"]
    assert isinstance(payload, dict)
    return http(payload["port"], path, headers={"X-JST-Auth": payload["token"], **headers})


def pick(host: HostProcess, folder: Path) -> dict[str, Any]:
    host.env.picker_answer.write_text(str(folder))
    reply = host.request({"op": "pickDownloadDirectory"})
    assert reply["ok"], reply
    return reply


# -- handshake and the daemon ---------------------------------------------------------------


def test_handshake_returns_a_daemon_that_answers_with_that_token(host: HostProcess) -> None:
    info = host.handshake()
    payload = info["payload"]
    assert list(info) == ["id", "ok", "type", "payload"]
    assert list(payload) == ["port", "token", "version", "roots"]
    assert len(payload["token"]) == 36
    assert http(payload["port"], "/health")[0] == 200
    assert http(payload["port"], "/stats")[0] == 401  # no token
    assert daemon_get(info, "/stats")[0] == 200


def test_repeated_handshake_returns_the_same_daemon(host: HostProcess) -> None:
    first = host.handshake()
    second = host.handshake()
    assert first["payload"]["port"] == second["payload"]["port"]
    assert first["payload"]["token"] == second["payload"]["token"]
    host.daemon_pid()  # still exactly one daemon


def test_daemon_token_is_not_on_its_command_line_and_stdin_is_not_chromes(
    host: HostProcess,
) -> None:
    token = host.handshake()["payload"]["token"]
    daemon = psutil.Process(host.daemon_pid())
    assert token not in " ".join(daemon.cmdline())
    assert os.readlink(f"/proc/{daemon.pid}/fd/0") == "/dev/null"


def open_descriptors(pid: int) -> list[str]:
    """What each descriptor of ``pid`` points at (``pipe:[N]``, a path...)."""
    targets = []
    for name in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed while we looked
            targets.append(os.readlink(f"/proc/{pid}/fd/{name}"))
    return targets


def test_a_descriptor_leaked_to_the_host_reaches_none_of_its_daemons(host_env: HostEnv) -> None:
    # The daemon is started with posix_spawn, which has no close_fds: the host marks
    # every descriptor but the ones it passes close-on-exec first. A launcher's leak
    # (here an inheritable pipe) must not live on in the daemon, first or restarted.
    leak_read, leak_write = os.pipe()
    try:
        leak = os.readlink(f"/proc/self/fd/{leak_write}")

        class LeakyLauncherHost(HostProcess):
            inherited_fds = (leak_write,)

        host = LeakyLauncherHost(host_env)
        try:
            host.handshake()
            assert leak in open_descriptors(host.pid)  # the host did inherit it
            first = host.daemon_pid()
            assert leak not in open_descriptors(first)
            assert os.readlink(f"/proc/{first}/fd/0") == "/dev/null"
            os.kill(first, signal.SIGKILL)
            assert gone_within(first, 1.0)
            assert host.handshake()["ok"]
            second = host.daemon_pid()
            assert second != first
            assert leak not in open_descriptors(second)
            assert os.readlink(f"/proc/{second}/fd/0") == "/dev/null"
        finally:
            host.cleanup()
    finally:
        os.close(leak_read)
        os.close(leak_write)


def test_daemon_token_is_in_neither_its_environ_nor_its_command_line(host: HostProcess) -> None:
    # Issue 12: the token reaches the daemon through a pipe; /proc/<pid>/environ keeps a
    # process's initial environment for its whole life, whatever it does to os.environ.
    token = host.handshake()["payload"]["token"].encode()
    daemon = host.daemon_pid()
    assert token not in Path(f"/proc/{daemon}/environ").read_bytes()
    assert token not in Path(f"/proc/{daemon}/cmdline").read_bytes()
    assert b"JST_IO_DAEMON_TOKEN=" not in Path(f"/proc/{daemon}/environ").read_bytes()


def test_the_daemon_is_started_before_the_handshake(host: HostProcess) -> None:
    # Issue 17: the host starts its daemon at once, so its start overlaps the host's;
    # it serves only once the handshake has configured it, with the handshake's data.
    host.env.wait_for_profile(host.pid)
    daemon = host.daemon_pid()
    info = host.handshake()
    assert host.daemon_pid() == daemon
    assert http(info["payload"]["port"], "/health")[0] == 200
    # It took the handshake's install id: rereading "its" profile from disk works (500
    # would mean no profile with its install id).
    payload = info["payload"]
    status, _ = http(
        payload["port"],
        "/api/read-rpc-info-from-disk",
        method="POST",
        headers={"X-JST-Auth": payload["token"]},
    )
    assert status == 200


def test_handshake_writes_the_profile_and_adopts_existing_roots(host_env: HostEnv) -> None:
    folder = host_env.base / "Downloads"
    folder.mkdir()
    with running_host(host_env) as first:
        first.handshake()
        pick(first, folder)
        first.close_stdin()
        first.proc.wait(5)
    with running_host(host_env) as second:
        info = second.handshake()
        roots = info["payload"]["roots"]
        assert [r["path"] for r in roots] == [str(folder)]
        assert daemon_get(info, f"/ops/stat?path=&root_key={roots[0]['key']}")[0] == 200
    [profile] = host_env.profiles()
    assert profile["install_id"] == host_env.install_id
    assert profile["extension_id"] == EXTENSION_ID


# -- roots ------------------------------------------------------------------------------------


def test_picked_root_reaches_the_running_daemon(host: HostProcess) -> None:
    info = host.handshake()
    folder = host.env.base / "Films"
    folder.mkdir()
    reply = pick(host, folder)
    root = reply["payload"]["root"]
    assert reply["type"] == "RootAdded"
    assert list(root) == [
        "key",
        "path",
        "display_name",
        "removable",
        "last_stat_ok",
        "last_checked",
    ]
    assert root["path"] == str(folder)
    assert root["display_name"] == "Films"
    status, _ = http(
        info["payload"]["port"],
        f"/write/{root['key']}",
        method="POST",
        body=b"hello",
        headers={"X-JST-Auth": info["payload"]["token"], "X-Path-Base64": "YS50eHQ="},
    )
    assert status == 200
    assert (folder / "a.txt").read_bytes() == b"hello"
    [profile] = host.env.profiles()
    assert [r["key"] for r in profile["download_roots"]] == [root["key"]]


def test_picker_cancel_and_initial_directory(host: HostProcess) -> None:
    host.handshake()
    reply = host.request({"op": "pickDownloadDirectory"})
    assert reply == {
        "id": reply["id"],
        "ok": False,
        "error": "User cancelled folder selection",
        "type": "Empty",
    }
    folder = host.env.base / "Music"
    folder.mkdir()
    pick(host, folder)
    host.env.picker_answer.unlink()
    host.request({"op": "pickDownloadDirectory"})
    calls = (host.env.base / "picker.log").read_text().splitlines()
    assert calls[0] == f"Select Download Directory|{Path.home()}"
    assert calls[-1] == f"Select Download Directory|{folder}"


def test_deleted_root_is_gone_from_daemon_and_file(host: HostProcess) -> None:
    info = host.handshake()
    folder = host.env.base / "Keep"
    folder.mkdir()
    key = pick(host, folder)["payload"]["root"]["key"]
    assert daemon_get(info, f"/ops/stat?path=&root_key={key}")[0] == 200
    reply = host.request({"op": "deleteDownloadRoot", "key": key})
    assert reply == {"id": reply["id"], "ok": True, "type": "RootRemoved", "payload": {"key": key}}
    assert daemon_get(info, f"/ops/stat?path=&root_key={key}")[0] == 403
    assert host.env.profiles()[0]["download_roots"] == []
    assert folder.is_dir()  # files on disk are untouched
    again = host.request({"op": "deleteDownloadRoot", "key": key})
    assert again["error"] == f"Root not found: {key}"


# -- openFile / revealInFolder ----------------------------------------------------------------


def test_open_file_and_reveal_run_the_opener(host: HostProcess) -> None:
    host.handshake()
    folder = host.env.base / "Root"
    (folder / "Show").mkdir(parents=True)
    (folder / "Show" / "ep1.mkv").write_bytes(b"x")
    key = pick(host, folder)["payload"]["root"]["key"]
    reply = host.request({"op": "openFile", "rootKey": key, "path": "Show/ep1.mkv"})
    assert reply == {"id": reply["id"], "ok": True, "type": "Empty"}
    reply = host.request({"op": "revealInFolder", "rootKey": key, "path": "Show/ep1.mkv"})
    assert reply["ok"] is True
    assert host.env.opener_log.read_text().splitlines() == [
        str(folder / "Show" / "ep1.mkv"),
        str(folder / "Show"),
    ]


def test_open_file_errors(host_env: HostEnv) -> None:
    with running_host(host_env, FAKE_OPENER_STATUS="4") as host:
        host.handshake()
        folder = host_env.base / "Root"
        folder.mkdir()
        (folder / "f").write_bytes(b"")
        key = pick(host, folder)["payload"]["root"]["key"]
        missing = host.request({"op": "openFile", "rootKey": "0000000000000000", "path": "f"})
        assert missing["error"] == "Root not found: 0000000000000000"
        escape = host.request({"op": "openFile", "rootKey": key, "path": "../nothere/x"})
        assert escape["error"] == f'Path escape detected in base: "{folder}/.."'
        outside = host.request({"op": "openFile", "rootKey": key, "path": str(host_env.base)})
        assert outside["error"] == f'Path escape detected: "{host_env.base}"'
        failed = host.request({"op": "openFile", "rootKey": key, "path": "f"})
        assert failed["error"] == "xdg-open failed (exit code Some(4)): no handler"


# -- malformed input ----------------------------------------------------------------------------


def test_malformed_requests_get_errors_when_an_id_is_known(host: HostProcess) -> None:
    # Neither of these has a string id: nothing can be answered, and nothing is.
    host.send_raw(struct.pack("<I", 9) + b"not json!")
    body = b'{"id":7,"op":"handshake"}'
    host.send_raw(struct.pack("<I", len(body)) + body)
    reply = host.request({"op": "handshake", "installId": "x"})
    assert reply["ok"] is False
    assert "extensionId" in reply["error"]
    reply = host.request({"op": "launchRockets"})
    assert reply["error"] == "Unknown operation: launchRockets"
    reply = host.request({"op": "deleteDownloadRoot", "key": 5})
    assert reply["ok"] is False
    assert host.handshake()["ok"]  # and the host still works


def test_oversized_frame_ends_host_and_daemon(host: HostProcess) -> None:
    host.handshake()
    daemon = host.daemon_pid()
    host.send_raw(struct.pack("<I", 10 * 1024 * 1024 + 1))
    assert host.proc.wait(2) == 0
    assert gone_within(daemon, 1.0)


# -- lifecycle -----------------------------------------------------------------------------------


def test_stdin_eof_ends_host_and_daemon_within_a_second(host: HostProcess) -> None:
    host.handshake()
    daemon = host.daemon_pid()
    start = time.monotonic()
    host.close_stdin()
    assert host.proc.wait(2) == 0
    assert gone_within(daemon, 1.0 - (time.monotonic() - start) + 0.2)
    assert time.monotonic() - start < 1.2


def test_eof_inside_a_frame_ends_the_host(host: HostProcess) -> None:
    host.handshake()
    daemon = host.daemon_pid()
    host.send_raw(struct.pack("<I", 100) + b'{"id":')
    host.close_stdin()
    assert host.proc.wait(2) == 0
    assert gone_within(daemon, 1.0)


def test_sigkill_of_the_host_ends_the_daemon_within_a_second(host: HostProcess) -> None:
    host.handshake()
    daemon = host.daemon_pid()
    host.proc.kill()
    host.proc.wait()
    assert gone_within(daemon, 1.0)


def test_sigterm_ends_host_and_daemon(host: HostProcess) -> None:
    host.handshake()
    daemon = host.daemon_pid()
    host.proc.send_signal(signal.SIGTERM)
    assert host.proc.wait(2) == 0
    assert gone_within(daemon, 0.5)


def test_crashed_daemon_is_restarted_on_the_same_port(host: HostProcess) -> None:
    info = host.handshake()
    port, token = info["payload"]["port"], info["payload"]["token"]
    first = host.daemon_pid()
    os.kill(first, signal.SIGKILL)
    assert gone_within(first, 1.0)
    # The port is never closed in between: a client arriving now waits, it is not refused.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert conn.recv(100).startswith(b"HTTP/1.1 200 OK")
    status, _ = http(port, "/stats", headers={"X-JST-Auth": token})
    assert status == 200, host.log()
    assert host.daemon_pid() != first
    again = host.handshake()
    assert (again["payload"]["port"], again["payload"]["token"]) == (port, token)


def test_daemon_crash_loop_makes_the_handshake_fail_with_a_reason(host_env: HostEnv) -> None:
    crashing = host_env.bin_dir / "crashing-daemon"
    crashing.write_text("#!/bin/sh\nexit 3\n")
    crashing.chmod(0o755)
    with running_host(host_env, JST_IO_DAEMON=str(crashing)) as host:
        reply = host.request(
            {"op": "handshake", "extensionId": EXTENSION_ID, "installId": "i"}, timeout=20
        )
        assert reply["ok"] is False
        assert "Failed to start daemon" in reply["error"]
        assert "status 3" in reply["error"]
        assert (
            host.request({"op": "handshake", "extensionId": EXTENSION_ID, "installId": "i"})[
                "error"
            ]
            == reply["error"]
        )


@pytest.mark.slow
def test_a_daemon_failing_after_an_early_daemon_info_ends_in_a_clear_error(
    host_env: HostEnv,
) -> None:
    # Issue 17: the handshake answers while the first daemon is still starting. If that
    # daemon then fails, and every restart too, the supervisor gives up: the port is
    # closed (refused, not left hanging), the next handshake says why, no orphan.
    marker = host_env.base / "started-once"
    flaky = host_env.bin_dir / "flaky-daemon"
    flaky.write_text(
        f'#!/bin/sh\nif [ -e "{marker}" ]; then exit 3; fi\ntouch "{marker}"\nsleep 5\nexit 3\n'
    )
    flaky.chmod(0o755)
    with running_host(host_env, JST_IO_DAEMON=str(flaky)) as host:
        reply = host.handshake()
        port = reply["payload"]["port"]
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except ConnectionRefusedError:
                break
            assert time.monotonic() < deadline, host.log()
            time.sleep(0.1)
        again = host.request({"op": "handshake", "extensionId": EXTENSION_ID, "installId": "i"})
        assert again["ok"] is False
        assert "Failed to start daemon" in again["error"]
        assert "status 3" in again["error"]
        assert psutil.Process(host.pid).children() == []


def test_missing_daemon_executable_fails_the_handshake(host_env: HostEnv) -> None:
    with running_host(host_env, JST_IO_DAEMON=str(host_env.base / "nope")) as host:
        reply = host.request({"op": "handshake", "extensionId": EXTENSION_ID, "installId": "i"})
        assert reply["ok"] is False
        assert reply["error"].startswith("Failed to start daemon")


# -- events and the link-handler endpoint -----------------------------------------------------


def add_magnet(profile: dict[str, Any], link: str) -> tuple[int, bytes]:
    return http(
        int(profile["port"]),
        f"/add-magnet?token={profile['token']}",
        method="POST",
        body=json.dumps({"magnet": link}).encode(),
        headers={"Content-Type": "application/json"},
    )


def test_event_without_handshake_is_the_first_frame(host: HostProcess) -> None:
    profile = host.env.wait_for_profile(host.pid)
    link = "magnet:?xt=urn:btih:" + "ab" * 20 + "&dn=Test"
    status, body = add_magnet(profile, link)
    assert (status, json.loads(body)) == (
        200,
        {"status": "queued", "message": "Magnet link queued"},
    )
    assert host.recv() == {"event": "MagnetAdded", "payload": {"link": link}}


def test_events_during_startup_wait_for_the_daemon_info(host: HostProcess) -> None:
    profile = host.env.wait_for_profile(host.pid)
    host.send({"op": "handshake", "extensionId": EXTENSION_ID, "installId": "e"})
    assert add_magnet(profile, "magnet:?xt=1")[0] == 200
    assert add_magnet(profile, "magnet:?xt=2")[0] == 200
    assert host.recv()["type"] == "DaemonInfo"
    assert host.recv()["payload"] == {"link": "magnet:?xt=1"}
    assert host.recv()["payload"] == {"link": "magnet:?xt=2"}


def test_torrent_event_and_link_endpoint_errors(host: HostProcess) -> None:
    profile = host.env.wait_for_profile(host.pid)
    port, token = int(profile["port"]), profile["token"]
    as_json = {"Content-Type": "application/json"}
    ok = json.dumps({"file_name": "a.torrent", "contents_base64": "ZDE6YWUx"}).encode()
    assert http(port, f"/add-torrent?token={token}", "POST", ok, as_json)[0] == 200
    assert host.recv() == {
        "event": "TorrentAdded",
        "payload": {"name": "a.torrent", "infohash": "", "contentsBase64": "ZDE6YWUx"},
    }
    assert (
        http(port, f"/health?token={token}")[1]
        == json.dumps(
            {"status": "ok", "pid": host.pid, "version": __import__("jst").__version__},
            separators=(",", ":"),
        ).encode()
    )
    assert http(port, "/health?token=wrong") == (403, b"")
    assert http(port, "/health")[0] == 400
    assert http(port, "/add-magnet?token=wrong", "POST", b'{"magnet":"m"}', as_json)[0] == 403
    assert http(port, f"/add-magnet?token={token}", "POST", b'{"magnet":"m"}')[0] == 415
    assert http(port, f"/add-magnet?token={token}", "POST", b"{", as_json)[0] == 400
    assert http(port, f"/add-magnet?token={token}", "POST", b'{"magnet":1}', as_json)[0] == 422
    big = json.dumps({"file_name": "b", "contents_base64": "A" * 900_001}).encode()
    assert http(port, f"/add-torrent?token={token}", "POST", big, as_json) == (413, b"")
    assert http(port, f"/nothing?token={token}")[0] == 404
    assert http(port, f"/add-magnet?token={token}")[0] == 405
    assert host.no_frame_within(1.2)  # none of the refused requests produced an event


# -- rpc-info.json -----------------------------------------------------------------------------


def test_corrupt_rpc_info_is_kept_as_a_backup(host_env: HostEnv) -> None:
    host_env.rpc_info.parent.mkdir(parents=True)
    host_env.rpc_info.write_bytes(b'{"version":1,"profiles":[{"pid":')
    with running_host(host_env) as host:
        host.handshake()
        backups = list(host_env.rpc_info.parent.glob("rpc-info.json.corrupt-*"))
        assert [b.read_bytes() for b in backups] == [b'{"version":1,"profiles":[{"pid":']
        assert [p["install_id"] for p in host_env.profiles()] == [host_env.install_id]
    assert oct(host_env.rpc_info.stat().st_mode & 0o777) == "0o600"


# -- the rest of §2.8 / §3.4 --------------------------------------------------------------------


def cors_origin(port: int, origin: str) -> str | None:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/health", headers={"Origin": origin}, method="GET"
    )
    with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 (loopback)
        allowed: str | None = resp.headers.get("access-control-allow-origin")
    return allowed


def test_daemon_allows_the_extension_and_env_file_dev_origins(host_env: HostEnv) -> None:
    app = host_env.rpc_info.parent
    app.mkdir(parents=True)
    (app / "jstorrent-native.env").write_text(
        "# developer overrides\nDEV_ORIGINS = http://local.test:3001\n"
    )
    with running_host(host_env) as host:
        port = host.handshake()["payload"]["port"]
        assert cors_origin(port, f"chrome-extension://{EXTENSION_ID}") == (
            f"chrome-extension://{EXTENSION_ID}"
        )
        assert cors_origin(port, "http://local.test:3001") == "http://local.test:3001"
        assert cors_origin(port, "http://elsewhere.test") is None


def test_stray_output_cannot_reach_the_frame_stream(host_env: HostEnv) -> None:
    # A library that prints after startup must not corrupt the frames Chrome reads.
    script = (
        "import os, sys\n"
        "from jst.host import cli, stdio\n"
        "take = stdio.take_stdio\n"
        "def noisy():\n"
        "    fds = take()\n"
        "    print('stray print'); sys.stdout.flush(); os.write(1, b'raw write to fd 1')\n"
        "    return fds\n"
        "stdio.take_stdio = noisy\n"
        f"sys.exit(cli.main([{ORIGIN!r}]))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=host_env.environ(),
    )
    try:
        body = json.dumps({"op": "deleteDownloadRoot", "key": "k", "id": "1"}).encode()
        out, err = proc.communicate(struct.pack("<I", len(body)) + body, timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    reply = b'{"id":"1","ok":false,"error":"Root not found: k","type":"Empty"}'
    assert out == struct.pack("<I", len(reply)) + reply
    assert b"stray print" in err
    assert b"raw write to fd 1" in err


def test_daemon_lifecycle_is_in_the_host_log(host: HostProcess) -> None:
    info = host.handshake()
    # DaemonInfo may now come before the daemon is ready (issue 17); once it answers, it is.
    assert http(info["payload"]["port"], "/health")[0] == 200
    os.kill(host.daemon_pid(), signal.SIGKILL)
    log_file = host.env.rpc_info.parent / "jst-native-host.log"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and log_file.read_text().count("-> RUNNING") < 2:
        time.sleep(0.05)
    lines = [line for line in log_file.read_text().splitlines() if "io-daemon " in line]
    transitions = [line.split("io-daemon ", 1)[1].split(" (")[0] for line in lines if "->" in line]
    assert transitions[:3] == [
        "STOPPED -> STARTING",
        "STARTING -> RUNNING",
        "RUNNING -> STARTING",
    ]
    assert "STARTING -> RUNNING" in transitions[3:]


@pytest.mark.slow
def test_concurrent_hosts_picking_roots_lose_nothing(tmp_path: Path) -> None:
    hosts_n, picks = 4, 5
    env = HostEnv(tmp_path)
    env.setup()
    folders = [[tmp_path / f"h{h}" / f"r{p}" for p in range(picks)] for h in range(hosts_n)]
    for folder in (f for row in folders for f in row):
        folder.mkdir(parents=True)
    answers = [tmp_path / f"answer-{h}" for h in range(hosts_n)]
    pickers = []
    for h in range(hosts_n):
        picker = env.bin_dir / f"picker-{h}"
        picker.write_text(f'#!/bin/sh\ncat "{answers[h]}"\n')
        picker.chmod(0o755)
        pickers.append(picker)
    errors: list[BaseException] = []

    def drive(h: int, host: HostProcess) -> None:
        try:
            host.handshake(install_id=f"install-{h}")
            for folder in folders[h]:
                answers[h].write_text(str(folder))
                assert host.request({"op": "pickDownloadDirectory"})["ok"]
        except BaseException as exc:
            errors.append(exc)

    hosts = [HostProcess(env, JST_FOLDER_PICKER=str(pickers[h])) for h in range(hosts_n)]
    try:
        threads = [threading.Thread(target=drive, args=(h, hosts[h])) for h in range(hosts_n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
    finally:
        for host in hosts:
            host.cleanup()
    by_install = {p["install_id"]: p for p in env.profiles()}
    assert sorted(by_install) == [f"install-{h}" for h in range(hosts_n)]
    for h in range(hosts_n):
        paths = [r["path"] for r in by_install[f"install-{h}"]["download_roots"]]
        assert paths == [str(f) for f in folders[h]]


def test_requests_read_before_eof_are_still_answered(host: HostProcess) -> None:
    # "Write one request, close stdin, read the reply": how one-shot clients talk.
    host.send({"op": "deleteDownloadRoot", "key": "k", "id": "a"})
    host.send({"op": "handshake", "extensionId": EXTENSION_ID, "installId": "x", "id": "b"})
    host.close_stdin()
    replies = {host.recv()["id"], host.recv()["id"]}
    assert replies == {"a", "b"}
    assert host.proc.wait(2) == 0
    host.note_children()
    for pid in host.descendants:
        assert gone_within(pid, 1.0)


def test_daemon_shut_down_by_a_client_is_not_restarted_until_the_next_handshake(
    host: HostProcess,
) -> None:
    info = host.handshake()
    port, token = info["payload"]["port"], info["payload"]["token"]
    first = host.daemon_pid()
    status, _ = http(port, "/control/shutdown", method="POST", headers={"X-JST-Auth": token})
    assert status == 200
    assert gone_within(first, 2.0)
    time.sleep(0.5)
    assert psutil.Process(host.pid).children() == []  # not restarted behind the client's back
    with pytest.raises(ConnectionRefusedError):  # refused, not left hanging in a backlog
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    again = host.handshake()
    assert (again["payload"]["port"], again["payload"]["token"]) == (port, token)
    assert http(port, "/health")[0] == 200
