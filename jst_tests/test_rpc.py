"""``jst rpc`` driven as a front-end drives it: a subprocess, JSON lines on its stdio,
real hosts (and their daemons) on loopback."""

from __future__ import annotations

import base64
import json
import queue
import random
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from jst_tests.hostproc import HostEnv, HostProcess, gone_within, running_host
from jst_tests.strictjson import strict_json

JST = str(Path(sys.executable).parent / "jst")
MAGNET = "magnet:?xt=urn:btih:" + "d" * 40 + "&dn=rpc"
TORRENT = b"d8:announce9:udp://x:14:infod6:lengthi1e4:name1:a12:piece lengthi16384e6:pieces0:ee"
LINE_TIMEOUT = 20.0


class RpcProcess:
    def __init__(self, env: HostEnv) -> None:
        self.proc = subprocess.Popen(
            [JST, "rpc"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env.environ(JST_LINK_HANDLER_DIALOG="0"),
        )
        self.lines: queue.Queue[bytes | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def send_raw(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, doc: Any) -> None:
        self.send_raw(json.dumps(doc).encode() + b"\n")

    def recv(self, timeout: float = LINE_TIMEOUT) -> Any:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line within {timeout} s") from None
        assert line is not None, "jst rpc closed its stdout"
        assert line.endswith(b"\n")
        return strict_json(line)

    def call(self, method: str, params: Any = None, request_id: Any = 1) -> Any:
        request: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            request["params"] = params
        self.send(request)
        reply = self.recv()
        assert reply["id"] == request_id, reply
        return reply

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(timeout=30)

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def rpc(host_env: HostEnv) -> Iterator[RpcProcess]:
    bridge = RpcProcess(host_env)
    try:
        yield bridge
    finally:
        bridge.cleanup()


@pytest.fixture
def host(host_env: HostEnv) -> Iterator[HostProcess]:
    with running_host(host_env) as h:
        host_env.wait_for_profile(h.pid)
        yield h


def error(reply: dict[str, Any]) -> tuple[int, str | None]:
    assert "result" not in reply, reply
    return reply["error"]["code"], reply["error"].get("data", {}).get("reason")


# -- with no host running ---------------------------------------------------------------------


def test_no_host_running(rpc: RpcProcess) -> None:
    status = rpc.call("get_status")["result"]
    assert (status["ok"], status["hosts"], status["daemons"], status["roots"]) == (True, [], [], [])
    assert rpc.call("list_roots")["result"] == []
    assert error(rpc.call("add_magnet", {"link": MAGNET})) == (
        -32002,
        "No JSTorrent host is running",
    )
    code, reason = error(rpc.call("stop_daemon", {"install_id": "nobody"}))
    assert code == -32003
    assert reason is not None
    assert "nobody" in reason
    assert rpc.close() == 0


def test_unknown_method_and_wrong_params(rpc: RpcProcess) -> None:
    assert error(rpc.call("format_disk")) == (-32601, "no method 'format_disk'")
    assert error(rpc.call("add_magnet", {})) == (-32602, "missing param: link")
    assert error(rpc.call("add_magnet", {"link": 5})) == (-32602, "link must be a string")
    assert error(rpc.call("add_magnet", {"link": MAGNET, "wait": -1}))[0] == -32602
    assert error(rpc.call("add_magnet", {"link": MAGNET, "wait": 1e9}))[0] == -32602
    assert error(rpc.call("get_status", {"verbose": True})) == (-32602, "unknown param(s): verbose")
    both = {"path": "/x.torrent", "contents_base64": "ZA==", "name": "x"}
    assert error(rpc.call("add_torrent", both))[0] == -32602
    assert error(rpc.call("add_torrent", {}))[0] == -32602
    assert error(rpc.call("add_torrent", {"contents_base64": "ZA=="})) == (
        -32602,
        "missing param: name",
    )
    assert error(rpc.call("stop_daemon", [])) == (-32602, "missing param: install_id")


def test_bad_links_and_files_are_refused_with_the_reason(rpc: RpcProcess, tmp_path: Path) -> None:
    code, reason = error(rpc.call("add_magnet", {"link": "https://example.invalid/x.torrent"}))
    assert code == -32001
    assert reason is not None
    assert reason.startswith("Not a magnet link")
    assert error(rpc.call("add_magnet", {"link": "magnet:?dn=no-hash"})) == (
        -32001,
        "Not a BitTorrent magnet link: it has no info hash (xt=urn:btih:...)",
    )
    missing = tmp_path / "missing.torrent"
    assert error(rpc.call("add_torrent", {"path": str(missing)})) == (
        -32001,
        f"File does not exist: {missing}",
    )
    not_torrent = tmp_path / "notes.torrent"
    not_torrent.write_text("hello")
    assert error(rpc.call("add_torrent", {"path": str(not_torrent)}))[0] == -32001
    assert error(rpc.call("add_torrent", {"contents_base64": "!!", "name": "a"}))[0] == -32001
    text = base64.b64encode(b"hello").decode()
    assert error(rpc.call("add_torrent", {"contents_base64": text, "name": "a.torrent"})) == (
        -32001,
        "Not a torrent file: a.torrent",
    )


def test_protocol_errors_batches_and_notifications(rpc: RpcProcess) -> None:
    rpc.send_raw(b"{oops\n")
    reply = rpc.recv()
    assert (reply["id"], error(reply)[0]) == (None, -32700)
    rpc.send_raw(b'{"jsonrpc":"2.0","id":5,"method":7}\n')
    reply = rpc.recv()
    assert (reply["id"], error(reply)[0]) == (5, -32600)
    rpc.send_raw(b"[]\n")
    assert error(rpc.recv())[0] == -32600
    # A notification is never answered, even an unknown one; blank lines are skipped.
    rpc.send_raw(b'{"jsonrpc":"2.0","method":"nope"}\n\n')
    rpc.send(
        [
            {"jsonrpc": "2.0", "id": "a", "method": "list_roots"},
            {"jsonrpc": "2.0", "method": "get_status"},
            {"jsonrpc": "2.0", "id": "b", "method": "nope"},
            42,
        ]
    )
    batch = rpc.recv()
    assert [r["id"] for r in batch] == ["a", "b", None]
    assert batch[0]["result"] == []
    assert [error(r)[0] for r in batch[1:]] == [-32601, -32600]
    rpc.send([{"jsonrpc": "2.0", "method": "list_roots"}])  # notifications only: no line
    assert rpc.call("list_roots", request_id="after")["result"] == []


def test_an_id_that_is_no_json_number_is_an_invalid_request_with_id_null(
    rpc: RpcProcess,
) -> None:
    # Python's parser reads NaN and Infinity; echoing them made the reply invalid JSON.
    for id_text in (b"NaN", b"Infinity", b"-Infinity", b"1e400"):
        rpc.send_raw(b'{"jsonrpc":"2.0","id":' + id_text + b',"method":"list_roots"}\n')
        reply = rpc.recv()  # strict: a NaN in the reply fails here
        assert (reply["id"], error(reply)[0]) == (None, -32600), id_text
    rpc.send_raw(b'[{"jsonrpc":"2.0","id":NaN,"method":"list_roots"},'
                 b'{"jsonrpc":"2.0","id":1.5,"method":"list_roots"}]\n')  # fmt: skip
    batch = rpc.recv()
    assert [r["id"] for r in batch] == [None, 1.5]
    assert error(batch[0])[0] == -32600
    assert batch[1]["result"] == []


def test_a_slow_call_is_overtaken_by_a_fast_one(host_env: HostEnv, rpc: RpcProcess) -> None:
    # The slow call waits for a host that is not there yet; the fast ones do not wait.
    rpc.send({"jsonrpc": "2.0", "id": "slow", "method": "add_magnet",
              "params": {"link": MAGNET, "wait": 30}})  # fmt: skip
    rpc.send({"jsonrpc": "2.0", "id": "fast", "method": "list_roots"})
    assert rpc.recv()["id"] == "fast"
    assert rpc.call("get_status", request_id="fast2")["result"]["hosts"] == []
    with running_host(host_env) as host:  # now a host starts: the slow call completes
        reply = rpc.recv()
        assert reply["id"] == "slow"
        assert reply["result"]["delivered"] is True
        assert reply["result"]["host_pid"] == host.pid
        assert host.recv() == {"event": "MagnetAdded", "payload": {"link": MAGNET}}


def test_eof_cancels_calls_in_flight_and_exits_0(rpc: RpcProcess) -> None:
    rpc.send({"jsonrpc": "2.0", "id": 1, "method": "add_magnet",
              "params": {"link": MAGNET, "wait": 120}})  # fmt: skip
    rpc.send({"jsonrpc": "2.0", "id": 2, "method": "list_roots"})
    assert rpc.recv()["id"] == 2
    # The call would wait 120 s; close() bounds its wait for the exit to 30 s.
    assert rpc.close() == 0
    assert rpc.lines.get(timeout=5) is None  # nothing more was written


def test_requests_read_before_eof_are_answered(host_env: HostEnv) -> None:
    requests = b"".join(
        json.dumps({"jsonrpc": "2.0", "id": i, "method": "list_roots"}).encode() + b"\n"
        for i in range(5)
    )
    result = subprocess.run(
        [JST, "rpc"], input=requests, capture_output=True, env=host_env.environ(), timeout=30,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0
    assert sorted(json.loads(line)["id"] for line in result.stdout.splitlines()) == list(range(5))


# -- with a host running ----------------------------------------------------------------------


def test_links_and_torrents_reach_the_host(
    rpc: RpcProcess, host: HostProcess, tmp_path: Path
) -> None:
    reply = rpc.call("add_magnet", {"link": MAGNET})["result"]
    assert reply == {"delivered": True, "host_pid": host.pid, "browser": reply["browser"],
                     "via": "unix"}  # fmt: skip
    assert host.recv() == {"event": "MagnetAdded", "payload": {"link": MAGNET}}
    path = tmp_path / "Show.torrent"
    path.write_bytes(TORRENT)
    assert rpc.call("add_torrent", {"path": path.as_uri()})["result"]["delivered"]
    event = host.recv()
    assert (event["event"], event["payload"]["name"]) == ("TorrentAdded", "Show.torrent")
    contents = base64.b64encode(TORRENT).decode()
    params = {"contents_base64": contents, "name": "Given.torrent"}
    assert rpc.call("add_torrent", params)["result"]["host_pid"] == host.pid
    assert host.recv()["payload"] == {"name": "Given.torrent", "infohash": "",
                                      "contentsBase64": contents}  # fmt: skip


def test_status_roots_and_stop_daemon(
    host_env: HostEnv, rpc: RpcProcess, host: HostProcess, tmp_path: Path
) -> None:
    folder = tmp_path / "downloads"
    folder.mkdir()
    host_env.picker_answer.write_text(str(folder))
    host.handshake()
    assert host.request({"op": "pickDownloadDirectory"})["ok"]
    daemon_pid = host.daemon_pid()
    roots = rpc.call("list_roots")["result"]
    assert [(r["path"], r["available"], r["install_id"]) for r in roots] == [
        (str(folder), True, host_env.install_id)
    ]
    status = rpc.call("get_status")["result"]
    assert status["ok"], status["problems"]
    assert [h["pid"] for h in status["hosts"]] == [host.pid]
    assert status["hosts"][0]["answering"] is True
    (daemon,) = status["daemons"]
    assert (daemon["pid"], daemon["parent_pid"], daemon["install_id"]) == (
        daemon_pid, host.pid, host_env.install_id,
    )  # fmt: skip
    assert daemon["stats"]["ws_connections"] == 0
    assert "token" not in json.dumps(status).lower()
    folder.rmdir()
    assert [r["available"] for r in rpc.call("list_roots")["result"]] == [False]
    assert rpc.call("stop_daemon", {"install_id": host_env.install_id})["result"] == {
        "stopped": True,
        "pid": daemon_pid,
    }
    assert gone_within(daemon_pid, 5)
    assert psutil.pid_exists(host.pid)  # the host lives on, and starts a daemon again
    assert host.handshake()["ok"]


# -- fuzzed input -----------------------------------------------------------------------------


def fuzz_lines(seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)
    valid = [
        {"jsonrpc": "2.0", "id": 1, "method": "list_roots"},
        {"jsonrpc": "2.0", "id": "x", "method": "add_magnet", "params": {"link": "magnet:?x"}},
        {"jsonrpc": "2.0", "id": 2, "method": "add_torrent", "params": {"path": "/nonexistent"}},
        [{"jsonrpc": "2.0", "id": 3, "method": "get_status"}, {"jsonrpc": "2.0", "id": 4}],
    ]
    lines: list[bytes] = []
    for _ in range(count):
        base = bytearray(json.dumps(rng.choice(valid)).encode())
        for _ in range(rng.randrange(4)):  # mutate: flip, insert, delete bytes
            if not base:
                break
            at = rng.randrange(len(base))
            action = rng.randrange(3)
            if action == 0:
                base[at] = rng.randrange(256)
            elif action == 1:
                base.insert(at, rng.choice(b'{}[]",:\\0a\xff'))
            else:
                del base[at]
        if rng.random() < 0.1:
            base = bytearray(rng.randbytes(rng.randrange(1, 64)))
        lines.append(bytes(base).replace(b"\n", b" "))
    return lines


def test_fuzzed_input_gets_whole_json_lines_and_the_bridge_lives(rpc: RpcProcess) -> None:
    from jst.ui import jsonrpc

    lines = fuzz_lines(seed=16, count=300)
    expected = 0
    for line in lines:
        parsed = jsonrpc.parse_line(line)
        if line.strip() and any(isinstance(s, jsonrpc.Reply) or not s.notification
                                for s in parsed.slots):  # fmt: skip
            expected += 1
    rpc.send_raw(b"\n".join(lines) + b"\n")
    for _ in range(expected):
        reply = rpc.recv()  # each one parses as JSON on its own line
        for r in reply if isinstance(reply, list) else [reply]:
            assert r["jsonrpc"] == "2.0"
            assert ("result" in r) != ("error" in r)
    assert rpc.call("list_roots", request_id="alive")["result"] == []
    rpc.send_raw(b"x" * (4 * 1024 * 1024 + 10) + b"\n")  # over the line limit
    assert error(rpc.recv())[0] == -32700
    assert rpc.call("list_roots", request_id="still alive")["result"] == []


def test_a_front_end_that_closed_our_stdout_does_not_crash_the_bridge(host_env: HostEnv) -> None:
    proc = subprocess.Popen(
        [JST, "rpc"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=host_env.environ(),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdin is not None
        proc.stdout.close()  # gone before the first reply
        request = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "list_roots"}).encode()
        proc.stdin.write((request + b"\n") * 100 + b"x" * (4 * 1024 * 1024 + 1) + b"\n")
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
        assert proc.stderr is not None
        assert b"Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_paths_with_lone_surrogates_are_refused_not_fatal(rpc: RpcProcess) -> None:
    rpc.send_raw(b'{"jsonrpc":"2.0","id":"\\udcff","method":"add_torrent",'
                 b'"params":{"path":"/nonexistent/\\udcff.torrent"}}\n')  # fmt: skip
    reply = rpc.recv()
    assert reply["id"] == "\udcff"
    assert error(reply) == (-32001, "File does not exist: /nonexistent/\udcff.torrent")
    assert rpc.call("list_roots", request_id="alive")["result"] == []
