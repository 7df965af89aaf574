"""The io-daemon killed mid-work, and starved of fds, disk and a reading client.

Killed daemons run under a real host, which must restart them on the same port; the
exhaustion cases run a daemon alone under resource limits (RLIMIT_NOFILE, RLIMIT_FSIZE,
a 1 MiB tmpfs in a private mount namespace) or a client that never reads.
"""

from __future__ import annotations

import base64
import http.client as httpclient
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import trio
from trio_websocket import ConnectionClosed
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, Request

from jst_tests.daemonproc import DAEMON, ROOT_KEY, DaemonEnv, read_port_line, stop
from jst_tests.faults.harness import limits, wait_until
from jst_tests.hostproc import HostEnv, HostProcess, http, running_host
from jst_tests.ioclient import (
    AUTH,
    HELLO,
    TCP_CONNECT,
    TCP_SEND,
    IoClient,
    echo_handler,
    frame,
    io_session,
    start_tcp_server,
)

MiB = 1024 * 1024


def block(n: int) -> bytes:
    """Deterministic, distinct content for the n-th MiB."""
    return struct.pack("<I", n) * (MiB // 4)


Supervised = tuple[HostProcess, int, str, str, Path]


@pytest.fixture
def supervised(host_env: HostEnv) -> Iterator[Supervised]:
    """A host with one root and a running daemon: (host, port, token, key, folder)."""
    folder = host_env.base / "Root"
    folder.mkdir()
    with running_host(host_env) as host:
        info = host.handshake()
        # DaemonInfo may come before the daemon serves (issue 17); these tests kill a
        # daemon that is serving, so wait for that.
        assert http(info["payload"]["port"], "/health")[0] == 200
        host_env.picker_answer.write_text(str(folder))
        key = host.request({"op": "pickDownloadDirectory"})["payload"]["root"]["key"]
        yield host, info["payload"]["port"], info["payload"]["token"], key, folder


def restarted(host: HostProcess, first: int, port: int) -> None:
    wait_until(lambda: host.daemon_pid() != first if _has_daemon(host) else False, 5,
               "a new daemon")  # fmt: skip
    assert http(port, "/health")[0] == 200


def _has_daemon(host: HostProcess) -> bool:
    return len(psutil.Process(host.pid).children()) == 1


class ChunkWriter(threading.Thread):
    """Writes a 1 GiB file as the engine does, in 16 MiB requests, until one fails."""

    CHUNK_MIB = 16

    def __init__(self, port: int, token: str, key: str) -> None:
        super().__init__(daemon=True)
        self.port, self.token, self.key = port, token, key
        self.acknowledged = 0  # chunks answered 200
        self.failure: object = None

    def run(self) -> None:
        path = base64.b64encode(b"big.bin").decode()
        for n in range(1024 // self.CHUNK_MIB):
            body = b"".join(block(n * self.CHUNK_MIB + i) for i in range(self.CHUNK_MIB))
            headers = {"X-JST-Auth": self.token, "X-Path-Base64": path,
                       "X-Offset": str(n * self.CHUNK_MIB * MiB)}  # fmt: skip
            try:
                status, _ = http(self.port, f"/write/{self.key}", "POST", body, headers, 30)
            except (OSError, httpclient.HTTPException) as exc:
                self.failure = exc
                return
            if status != 200:
                self.failure = status
                return
            self.acknowledged += 1


@pytest.mark.slow
def test_daemon_killed_during_a_1_gib_write(supervised: Supervised) -> None:
    host, port, token, key, folder = supervised
    first = host.daemon_pid()
    writer = ChunkWriter(port, token, key)
    writer.start()
    wait_until(lambda: writer.acknowledged >= 12 or not writer.is_alive(), 60, "12 writes")
    os.kill(first, signal.SIGKILL)
    writer.join(35)
    assert not writer.is_alive(), "the client hangs after the daemon died"
    if writer.failure is None:  # killed between two requests: the next one simply waited
        assert writer.acknowledged == 1024 // ChunkWriter.CHUNK_MIB
    acknowledged_mib = writer.acknowledged * ChunkWriter.CHUNK_MIB
    assert acknowledged_mib >= 12 * ChunkWriter.CHUNK_MIB
    with (folder / "big.bin").open("rb") as f:  # everything acknowledged is there, intact
        for n in range(acknowledged_mib):
            assert f.read(MiB) == block(n), f"acknowledged MiB {n} damaged"
    restarted(host, first, port)
    headers = {"X-JST-Auth": token, "X-Path-Base64": base64.b64encode(b"big.bin").decode()}
    assert http(port, f"/write/{key}", "POST", b"again", headers)[0] == 200


def test_daemon_killed_during_a_hash(supervised: Supervised) -> None:
    host, port, token, key, folder = supervised
    with (folder / "sparse.bin").open("wb") as f:
        f.truncate(8 * 1024 * MiB)  # reads as zeros, costs no disk
    first = host.daemon_pid()
    outcome: list[object] = []

    def hash_it() -> None:
        try:
            outcome.append(http(port, f"/hash/sha1/sparse.bin?root_token={key}&offset=0"
                                f"&length={8 * 1024 * MiB}", headers={"X-JST-Auth": token},
                                timeout=60))  # fmt: skip
        except OSError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=hash_it, daemon=True)
    worker.start()
    time.sleep(0.5)
    os.kill(first, signal.SIGKILL)
    worker.join(10)
    assert not worker.is_alive(), "the client hangs after the daemon died"
    assert isinstance(outcome[0], OSError | httpclient.HTTPException), outcome
    restarted(host, first, port)


async def session_end(client: IoClient) -> bool:
    """Read until the WebSocket ends; True when it ended by closing or breaking."""
    try:
        while True:
            await client.next(within=5)
    except (ConnectionClosed, trio.BrokenResourceError, OSError):
        return True


async def test_daemon_killed_with_200_open_sockets(host_env: HostEnv) -> None:
    closed = 0

    async def counting_echo(stream: trio.SocketStream) -> None:
        nonlocal closed
        await echo_handler(stream)
        closed += 1

    host = await trio.to_thread.run_sync(HostProcess, host_env)
    try:
        info = await trio.to_thread.run_sync(host.handshake)
        port, token = info["payload"]["port"], info["payload"]["token"]
        first = host.daemon_pid()
        async with trio.open_nursery() as nursery:
            echo = await start_tcp_server(nursery, counting_echo)
            async with io_session(port, token) as client:
                for sid in range(1, 201):
                    assert await client.connect(sid, echo)
                    await client.tcp_send(sid, b"x")
                for sid in range(1, 201):
                    assert await client.receive_exactly(sid, 1) == b"x"
                os.kill(first, signal.SIGKILL)
                with trio.fail_after(5):  # the session ends; it does not hang
                    ended = await session_end(client)
                assert ended
            with trio.fail_after(5):
                while closed < 200:  # noqa: ASYNC110 (every peer connection closed with it)
                    await trio.sleep(0.05)
            await trio.to_thread.run_sync(restarted, host, first, port)
            async with io_session(port, token) as client:  # same port, same token
                assert await client.connect(1, echo)
                await client.tcp_send(1, b"again")
                assert await client.receive_exactly(1, 5) == b"again"
            nursery.cancel_scope.cancel()
    finally:
        await trio.to_thread.run_sync(host.cleanup)


# -- exhaustion: a daemon alone, under limits ----------------------------------------------


def start_daemon(
    env: DaemonEnv, prefix: list[str] | None = None, **limit: int
) -> tuple[subprocess.Popen[bytes], int]:
    env.root.mkdir(parents=True, exist_ok=True)
    env.write_rpc_info()
    proc = subprocess.Popen(
        [*(prefix or []), *DAEMON, *env.daemon_args()],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=env.environ(), preexec_fn=limits(**limit) if limit else None,
    )  # fmt: skip
    return proc, read_port_line(proc)


def write(port: int, env: DaemonEnv, name: str, data: bytes) -> tuple[int, bytes]:
    headers = {"X-JST-Auth": env.token, "X-Path-Base64": base64.b64encode(name.encode()).decode()}
    return http(port, f"/write/{ROOT_KEY}", "POST", data, headers, timeout=30)


def read(port: int, env: DaemonEnv, name: str) -> tuple[int, bytes]:
    headers = {"X-JST-Auth": env.token, "X-Path-Base64": base64.b64encode(name.encode()).decode()}
    return http(port, f"/read/{ROOT_KEY}", headers=headers, timeout=30)


async def test_out_of_fds_connecting_and_accepting_keeps_serving(tmp_path: Path) -> None:
    env = DaemonEnv(tmp_path)
    proc, port = start_daemon(env, nofile=64)
    try:
        async with trio.open_nursery() as nursery:
            echo = await start_tcp_server(nursery, echo_handler)
            async with io_session(port, env.token) as client:
                listen_port = await client.listen(500)
                assert listen_port is not None
                outcomes = [await client.connect(sid, echo) for sid in range(1, 81)]
                assert True in outcomes, "no connection at all succeeded"
                assert False in outcomes, "RLIMIT_NOFILE=64 was never reached"
                # Out of fds: a peer connecting to our listener waits in the backlog.
                peer = await trio.open_tcp_stream("127.0.0.1", listen_port)
                for sid, ok in enumerate(outcomes, start=1):
                    if ok:
                        await client.send(0x14, 0, struct.pack("<I", sid))  # TCP_CLOSE
                accepted = await client.expect(0x17, 500)  # TCP_ACCEPT once fds are back
                assert accepted.request_id == 0
                await peer.aclose()
            assert proc.poll() is None
            status, body = await trio.to_thread.run_sync(http, port, "/health")
            assert (status, body) == (200, b"ok")
            nursery.cancel_scope.cancel()
    finally:
        stop(proc)


def test_file_size_limit_is_a_clear_error_and_damages_nothing(tmp_path: Path) -> None:
    env = DaemonEnv(tmp_path)
    proc, port = start_daemon(env, fsize=MiB)
    try:
        assert write(port, env, "keep.txt", b"precious")[0] == 200
        status, body = write(port, env, "big.bin", b"x" * (2 * MiB))
        assert status == 507, body
        assert body  # a message, not an empty error
        assert read(port, env, "keep.txt") == (200, b"precious")
        assert proc.poll() is None
    finally:
        stop(proc)


def test_full_disk_is_a_clear_error_and_damages_nothing(tmp_path: Path) -> None:
    if subprocess.run(["unshare", "-rm", "true"], check=False).returncode != 0:
        pytest.skip("unshare -rm (a private mount namespace) is not permitted here")
    env = DaemonEnv(tmp_path)
    env.root.mkdir(parents=True)
    mount = 'mount -t tmpfs -o size=1m tmpfs "$0" && exec "$@"'
    proc, port = start_daemon(env, ["unshare", "-rm", "sh", "-c", mount, str(env.root)])
    try:
        assert write(port, env, "keep.txt", b"precious" * 1000)[0] == 200
        status, body = write(port, env, "big.bin", b"x" * (2 * MiB))
        assert status == 507, body
        assert b"space" in body.lower()
        assert read(port, env, "keep.txt") == (200, b"precious" * 1000)
        assert proc.poll() is None
    finally:
        stop(proc)


def raw_session(port: int, token: str) -> tuple[socket.socket, WSConnection]:
    """A WebSocket we drive by hand, so that it can stop reading for good."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ws = WSConnection(ConnectionType.CLIENT)
    sock.sendall(ws.send(Request(host="127.0.0.1", target="/io")))
    while True:
        ws.receive_data(sock.recv(65536))
        if any(isinstance(e, AcceptConnection) for e in ws.events()):
            break
    sock.sendall(ws.send(BytesMessage(data=frame(HELLO, 1))))
    sock.sendall(ws.send(BytesMessage(data=frame(AUTH, 2, b"\x00" + token.encode() + b"\x00\x00"))))
    return sock, ws


@pytest.mark.slow
async def test_a_client_that_never_reads_costs_bounded_memory(tmp_path: Path) -> None:
    env = DaemonEnv(tmp_path)
    proc, port = start_daemon(env)
    chunk = b"s" * 65536

    async def source(stream: trio.SocketStream) -> None:
        try:
            while True:
                await stream.send_all(chunk)
        except trio.BrokenResourceError:
            pass

    try:
        async with trio.open_nursery() as nursery:
            src = await start_tcp_server(nursery, source)
            daemon = psutil.Process(proc.pid)
            baseline = daemon.memory_info().rss
            sock, ws = await trio.to_thread.run_sync(raw_session, port, env.token)
            for sid in range(1, 5):  # four fast sources into a session nobody reads
                payload = struct.pack("<IH", sid, src) + b"127.0.0.1"
                sock.sendall(ws.send(BytesMessage(data=frame(TCP_CONNECT, sid, payload))))
                await trio.sleep(0.2)
                sock.sendall(
                    ws.send(BytesMessage(data=frame(TCP_SEND, 0, struct.pack("<I", sid) + b"go")))
                )
            peak = baseline
            for _ in range(12):
                await trio.sleep(0.5)
                peak = max(peak, daemon.memory_info().rss)
            assert peak - baseline < 96 * MiB, f"daemon grew by {(peak - baseline) // MiB} MiB"
            async with io_session(port, env.token) as other:  # others are unaffected
                echo = await start_tcp_server(nursery, echo_handler)
                started = trio.current_time()
                assert await other.connect(1, echo)
                await other.tcp_send(1, b"ping")
                assert await other.receive_exactly(1, 4) == b"ping"
                assert trio.current_time() - started < 2
            sock.close()
            nursery.cancel_scope.cancel()
    finally:
        stop(proc)
