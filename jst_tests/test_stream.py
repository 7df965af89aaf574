"""Streaming against a live daemon: ``/stream/<token>`` and 0x40-0x44 on ``/io``.

The test plays the engine (STREAM_OPEN, STREAM_HAVE, verified writes) and a player
(plain HTTP range requests read as they arrive), over real loopback sockets.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio

from jst_tests.daemonproc import DaemonEnv, RunningDaemon, running_daemon
from jst_tests.httpclient import HttpClient
from jst_tests.ioclient import ERROR, IoClient, io_session
from jst_tests.streamclient import (
    STREAM_NEED,
    close_stream,
    expect_need,
    open_stream,
    send_have,
    start_reader,
    write_piece,
)

if TYPE_CHECKING:
    from jst.daemon.server import Server

MIB = 1024 * 1024


def payload(size: int, seed: int = 1) -> bytes:
    return bytes((i * 31 + seed + i // 251) % 256 for i in range(size))


@pytest.fixture
async def io(daemon: RunningDaemon) -> AsyncIterator[IoClient]:
    async with io_session(daemon.port, daemon.env.token) as client:
        yield client


def put_file(daemon: RunningDaemon, name: str, data: bytes) -> Path:
    path = daemon.env.root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


async def test_every_range_form_status_and_header(daemon: RunningDaemon, io: IoClient) -> None:
    data = payload(1000)
    put_file(daemon, "movie.mp4", data)
    opened = await open_stream(io, 1, "movie.mp4", len(data), [(0, len(data))])
    assert opened.status == 0
    assert re.fullmatch(rf"http://127\.0\.0\.1:{daemon.port}/stream/[A-Za-z0-9_-]+", opened.text)
    url = opened.url_path
    # No daemon token anywhere below: the URL is the capability. One keep-alive connection.
    async with HttpClient(daemon.port) as http:
        whole = await http.request("GET", url)
        assert whole.status == 200
        assert whole.body == data
        assert whole.header("accept-ranges") == "bytes"
        assert whole.header("content-type") == "video/mp4"
        assert whole.header("content-length") == "1000"
        assert whole.header("cache-control") == "no-store"
        assert whole.header("content-range") is None

        cases = {
            "bytes=10-19": (10, 20),
            "bytes=990-": (990, 1000),
            "bytes=-5": (995, 1000),
            "bytes=-5000": (0, 1000),
            "bytes=900-5000": (900, 1000),
        }
        for header, (start, end) in cases.items():
            part = await http.request("GET", url, [("Range", header)])
            assert part.status == 206, header
            assert part.body == data[start:end], header
            assert part.header("content-range") == f"bytes {start}-{end - 1}/1000"
            assert part.header("content-length") == str(end - start)

        for header in ("bytes=1000-", "bytes=5000-6000", "bytes=-0"):
            refused = await http.request("GET", url, [("Range", header)])
            assert refused.status == 416, header
            assert refused.header("content-range") == "bytes */1000"
            assert refused.body == b""

        several = await http.request("GET", url, [("Range", "bytes=0-1,5-6")])
        assert several.status == 200
        assert several.body == data

        head = await http.request("HEAD", url, [("Range", "bytes=10-19")])
        assert head.status == 206
        assert head.body == b""
        assert head.header("content-length") == "10"
        assert head.header("content-range") == "bytes 10-19/1000"

        assert (await http.request("POST", url)).status == 405
        assert (await http.request("GET", "/stream/" + "A" * 32)).status == 404
        # Still the same connection: every answer above kept it alive.
        assert (await http.request("GET", url, [("Range", "bytes=0-0")])).body == data[:1]


async def test_cors_follows_the_daemon_policy(daemon: RunningDaemon, io: IoClient) -> None:
    put_file(daemon, "a.webm", b"x" * 10)
    url = (await open_stream(io, 1, "a.webm", 10, [(0, 10)])).url_path
    origin = f"chrome-extension://{daemon.env.extension_id}"
    async with HttpClient(daemon.port) as http:
        ours = await http.request("GET", url, [("Origin", origin)])
        assert ours.header("access-control-allow-origin") == origin
        assert ours.header("content-type") == "video/webm"
        other = await http.request("GET", url, [("Origin", "https://evil.example")])
        assert other.header("access-control-allow-origin") is None
        assert other.header("vary") is not None
        preflight = await http.request("OPTIONS", url, [("Origin", origin)])
        assert preflight.status == 200


async def test_content_type_and_empty_file(daemon: RunningDaemon, io: IoClient) -> None:
    put_file(daemon, "empty.bin", b"")
    opened = await open_stream(io, 1, "empty.bin", 0, content_type="audio/ogg")
    async with HttpClient(daemon.port) as http:
        reply = await http.request("GET", opened.url_path)
        assert (reply.status, reply.body, reply.header("content-type")) == (200, b"", "audio/ogg")
        assert (await http.request("GET", opened.url_path, [("Range", "bytes=0-")])).status == 416


async def test_a_content_type_with_outer_whitespace_is_refused_at_open(
    daemon: RunningDaemon, io: IoClient
) -> None:
    """h11 cannot send such a header value: every GET used to end in a logged traceback
    and a closed connection with no answer, for as long as the stream lived."""
    put_file(daemon, "ws.bin", b"x" * 10)
    for sid, bad in enumerate((" video/mp4", "video/mp4\t", "\t"), start=1):
        opened = await open_stream(io, sid, "ws.bin", 10, [(0, 10)], content_type=bad)
        assert opened.status != 0, bad
    opened = await open_stream(io, 9, "ws.bin", 10, [(0, 10)], content_type="a  b")
    async with HttpClient(daemon.port) as http:
        reply = await http.request("GET", opened.url_path)
        assert (reply.status, reply.header("content-type")) == (200, "a  b")


async def test_blocked_reader_wakes_on_stream_have_and_gets_exactly_the_file(
    daemon: RunningDaemon, io: IoClient
) -> None:
    data = payload(10 * MIB)
    put_file(daemon, "v.mkv", data)  # on disk, but the engine has only vouched for 1 MiB
    opened = await open_stream(io, 3, "v.mkv", len(data), [(0, MIB)])
    async with trio.open_nursery() as nursery:
        reader = await start_reader(nursery, daemon.port, opened.url_path, "bytes=0-")
        # Blocked at 1 MiB: the NEED starts there and is clipped to a few MiB.
        start, end = await expect_need(io, 3)
        assert start == MIB
        assert MIB < end <= min(len(data), MIB + 8 * MIB)
        await reader.wait_for(MIB)
        assert not reader.ended.is_set()
        assert bytes(reader.body) == data[:MIB]
        await send_have(io, 3, [(MIB, len(data))])
        await reader.wait_ended()
    assert reader.status == 206
    assert reader.complete
    assert bytes(reader.body) == data


async def test_verified_write_wakes_a_reader_and_an_unverified_one_does_not(
    daemon: RunningDaemon, io: IoClient
) -> None:
    size = 256 * 1024
    data = payload(size, seed=7)
    half = size // 2
    put_file(daemon, "dir/f.mp4", data[:half])
    opened = await open_stream(io, 9, "dir/f.mp4", size, [(0, half)])
    async with trio.open_nursery() as nursery, HttpClient(daemon.port) as http:
        reader = await start_reader(nursery, daemon.port, opened.url_path)
        assert await expect_need(io, 9) == (half, size)
        await reader.wait_for(half)
        # Unverified: the bytes are on disk, but nobody vouched for them.
        await write_piece(http, daemon, "dir/f.mp4", half, data[half:], verify=False)
        with trio.move_on_after(0.5):
            await reader.wait_for(half + 1)
        assert len(reader.body) == half
        # The same bytes, verified, through a differently spelled path to the same file.
        await write_piece(http, daemon, "./dir//f.mp4", half, data[half:], verify=True)
        await reader.wait_ended()
    assert reader.status == 200
    assert bytes(reader.body) == data


async def test_two_readers_at_different_offsets_do_not_delay_each_other(
    daemon: RunningDaemon, io: IoClient
) -> None:
    data = payload(4 * MIB)
    put_file(daemon, "two.mp4", data)
    opened = await open_stream(io, 1, "two.mp4", len(data), [(0, MIB), (3 * MIB, 4 * MIB)])
    async with trio.open_nursery() as nursery:
        blocked = await start_reader(nursery, daemon.port, opened.url_path, f"bytes={MIB}-")
        assert await expect_need(io, 1) == (MIB, 3 * MIB)  # clipped at the next available byte
        for start in (0, 3 * MIB):
            other = await start_reader(
                nursery, daemon.port, opened.url_path, f"bytes={start}-{start + MIB - 1}"
            )
            await other.wait_ended()
            assert other.complete
            assert bytes(other.body) == data[start : start + MIB]
        assert not blocked.ended.is_set()
        assert len(blocked.body) == 0
        await send_have(io, 1, [(MIB, 3 * MIB)])
        await blocked.wait_ended()
    assert bytes(blocked.body) == data[MIB:]


async def test_stream_need_is_sent_once_per_wait_not_in_a_loop(
    daemon: RunningDaemon, io: IoClient
) -> None:
    size = 32 * MIB
    put_file(daemon, "big.bin", b"")
    opened = await open_stream(io, 5, "big.bin", size)
    async with trio.open_nursery() as nursery:
        reader = await start_reader(nursery, daemon.port, opened.url_path, f"bytes={MIB}-")
        first = await expect_need(io, 5)
        assert first[0] == MIB
        assert first[1] - first[0] <= 8 * MIB
        # Availability changes elsewhere wake the reader, but what it waits for does not
        # change: no new NEED.
        for piece in range(20, 30):
            await send_have(io, 5, [(piece * MIB, piece * MIB + 1000)])
        with trio.move_on_after(1.0):
            repeated = await io.expect(STREAM_NEED, 5)
            pytest.fail(f"a second STREAM_NEED for the same wait: {repeated}")
        # A seek (a second reader elsewhere) is a new wait: exactly one new NEED.
        second = await start_reader(nursery, daemon.port, opened.url_path, f"bytes={16 * MIB}-")
        assert (await expect_need(io, 5))[0] == 16 * MIB
        await reader.close()
        await second.close()
        nursery.cancel_scope.cancel()


async def test_closing_the_websocket_closes_its_streams_and_ends_blocked_responses(
    daemon: RunningDaemon,
) -> None:
    put_file(daemon, "a.mp4", payload(1000))
    async with trio.open_nursery() as nursery:
        async with io_session(daemon.port, daemon.env.token) as io:
            opened = await open_stream(io, 1, "a.mp4", 1000, [(0, 100)])
            reader = await start_reader(nursery, daemon.port, opened.url_path)
            await expect_need(io, 1)
        await reader.wait_ended()
    assert not reader.complete
    assert bytes(reader.body) == payload(1000)[:100]
    async with HttpClient(daemon.port) as http:
        assert (await http.request("GET", opened.url_path)).status == 404


async def test_stream_close_ends_responses_and_is_idempotent(
    daemon: RunningDaemon, io: IoClient
) -> None:
    put_file(daemon, "a.mp4", payload(1000))
    opened = await open_stream(io, 1, "a.mp4", 1000, [(0, 100)])
    async with trio.open_nursery() as nursery:
        reader = await start_reader(nursery, daemon.port, opened.url_path)
        await expect_need(io, 1)
        await close_stream(io, 1)
        await reader.wait_ended()
    assert not reader.complete
    await close_stream(io, 1)
    await close_stream(io, 12345)
    async with HttpClient(daemon.port) as http:
        assert (await http.request("GET", opened.url_path)).status == 404
    # The session is unharmed and the id can be used again.
    assert (await open_stream(io, 1, "a.mp4", 1000, [(0, 1000)])).status == 0


async def test_open_errors_say_why(daemon: RunningDaemon, io: IoClient) -> None:
    cases = {
        "unknown root": dict(root_key="nope"),
        "escape": dict(path="../outside.mp4"),
        "absolute": dict(path="/etc/passwd"),
        "drive": dict(path="C:/x.mp4"),
        "the root itself": dict(path="./"),
    }
    statuses = {}
    for name, fields in cases.items():
        path = fields.pop("path", "x.mp4")
        opened = await open_stream(io, 1, path, 10, **fields)  # type: ignore[arg-type]
        assert opened.status != 0, name
        assert opened.text, name
        statuses[name] = opened.status
    assert statuses["unknown root"] != statuses["escape"]
    os.symlink("/etc", daemon.env.root / "link")
    assert (await open_stream(io, 1, "link/passwd", 10)).status == statuses["escape"]

    assert (await open_stream(io, 1, "ok.mp4", 10)).status == 0
    duplicate = await open_stream(io, 1, "other.mp4", 10)
    assert duplicate.status != 0
    assert "already" in duplicate.text

    await io.send(0x40, 41, b"\x02\x00\x00\x00{not json")
    reply = await io.expect(0x41, 2)
    assert (reply.request_id, reply.payload[4] != 0) == (41, True)
    # A payload too short for a stream id is ignored; the daemon-to-client opcodes are
    # unknown opcodes when a client sends them. The session goes on.
    await io.send(0x40, 42, b"\x01")
    await io.send(0x43, 43, b"\0" * 20)
    error = await io.expect(ERROR)
    assert (error.request_id, error.payload) == (43, b"Unknown opcode")


async def test_stream_and_reader_limits_refuse_clearly(daemon: RunningDaemon, io: IoClient) -> None:
    put_file(daemon, "a.mp4", payload(100))
    for sid in range(64):
        assert (await open_stream(io, sid, "a.mp4", 100)).status == 0
    refused = await open_stream(io, 64, "a.mp4", 100)
    assert refused.status != 0
    assert "too many" in refused.text
    await close_stream(io, 0)
    opened = await open_stream(io, 64, "a.mp4", 100)
    assert opened.status == 0
    async with trio.open_nursery() as nursery:
        readers = [await start_reader(nursery, daemon.port, opened.url_path) for _ in range(16)]
        for _ in readers:
            await expect_need(io, 64)
        async with HttpClient(daemon.port) as http:
            busy = await http.request("GET", opened.url_path)
        assert busy.status == 503
        await close_stream(io, 64)
        for reader in readers:
            await reader.wait_ended()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts fds in /proc")
async def test_a_player_that_leaves_a_blocked_read_costs_nothing(
    daemon: RunningDaemon, io: IoClient
) -> None:
    put_file(daemon, "a.mp4", payload(1000))
    opened = await open_stream(io, 1, "a.mp4", 1000, [(0, 100)])
    fd_dir = Path(f"/proc/{daemon.proc.pid}/fd")
    baseline = len(os.listdir(fd_dir))
    async with trio.open_nursery() as nursery:
        reader = await start_reader(nursery, daemon.port, opened.url_path)
        await expect_need(io, 1)
        await reader.wait_for(100)
        assert len(os.listdir(fd_dir)) >= baseline + 2  # the connection and the file
        await reader.close()
    # The daemon notices at once (not after the 60 s stall limit): socket and file closed.
    with trio.fail_after(5):
        while len(os.listdir(fd_dir)) > baseline:  # noqa: ASYNC110 (another process)
            await trio.sleep(0.02)


async def test_token_is_long_and_never_logged(daemon_env: DaemonEnv) -> None:
    (daemon_env.root / "a.mp4").write_bytes(b"x" * 100)
    with running_daemon(daemon_env, extra_env={"RUST_LOG": "debug"}) as daemon:
        async with io_session(daemon.port, daemon.env.token) as io:
            tokens = []
            for sid in range(4):
                opened = await open_stream(io, sid, "a.mp4", 100, [(0, 50)])
                tokens.append(opened.token)
            assert len(set(tokens)) == 4
            async with trio.open_nursery() as nursery:
                reader = await start_reader(nursery, daemon.port, f"/stream/{tokens[0]}")
                await expect_need(io, 0)
                await close_stream(io, 0)
                await reader.wait_ended()
            async with HttpClient(daemon.port) as http:
                for token in tokens:
                    await http.request("GET", f"/stream/{token}", [("Range", "bytes=0-9")])
                    await http.request("PUT", f"/stream/{token}")
        daemon.proc.terminate()
        _out, err = daemon.proc.communicate(timeout=10)
    for token in tokens:
        # 128 bits at least: 22 URL-safe base64 characters carry 132.
        assert len(token) >= 22
        assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
    logs = err.decode("utf-8", "replace")
    for log_file in daemon_env.config_dir.rglob("*.log*"):
        logs += log_file.read_text("utf-8", "replace")
    assert "stream" in logs  # debug logging did record the streams...
    for token in tokens:
        assert token not in logs  # ...but never their capability


async def test_a_pipelined_request_is_not_mistaken_for_a_departed_client(
    daemon: RunningDaemon, io: IoClient
) -> None:
    data = payload(2000)
    put_file(daemon, "p.mp4", data)
    opened = await open_stream(io, 1, "p.mp4", len(data), [(0, 1000)])
    first_request = (
        f"GET {opened.url_path} HTTP/1.1\r\nHost: localhost\r\nRange: bytes=500-1499\r\n\r\n"
    )
    second_request = (
        f"GET {opened.url_path} HTTP/1.1\r\nHost: localhost\r\nRange: bytes=0-9\r\n\r\n"
    )
    stream = await trio.open_tcp_stream("127.0.0.1", daemon.port)
    async with stream:
        await stream.send_all(first_request.encode())
        assert await expect_need(io, 1) == (1000, 1500)  # clipped to the request
        # The first response is blocked; the next request arrives on the same socket
        # (it makes the socket readable, as a departed client's EOF would).
        await stream.send_all(second_request.encode())
        await trio.sleep(0.3)
        await send_have(io, 1, [(1000, 2000)])
        received = b""
        with trio.fail_after(10):
            while received.count(b"HTTP/1.1 206") < 2 or not received.endswith(data[:10]):
                chunk = await stream.receive_some(65536)
                assert chunk, f"connection closed early after {received!r}"
                received += chunk
    first, second = received.split(b"HTTP/1.1 206 Partial Content\r\n")[1:]
    assert first.endswith(b"\r\n\r\n" + data[500:1500])
    assert second.endswith(b"\r\n\r\n" + data[:10])


@contextlib.asynccontextmanager
async def serving_in_process(tmp_path: Path) -> AsyncIterator[tuple[Server, int, Path]]:
    """The daemon's HTTP server in this test's trio loop, so its constants can be patched
    and its state inspected."""
    from jst.daemon.http import CorsPolicy
    from jst.daemon.server import Server, serve
    from jst.daemon.state import DaemonState

    root = tmp_path / "root"
    root.mkdir()
    state = DaemonState(
        token=b"in-process-token",
        install_id="x",
        rpc_info_path=tmp_path / "none.json",
        cors=CorsPolicy.from_dev_origins(None),
        roots={"0123456789abcdef": str(root)},
    )
    server = Server(state, lambda: None, keep_alive_seconds=30, max_ws_message=64 * MIB)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve, server, listener.detach(), shutdown, 1.0)
        yield server, port, root
        shutdown.set()


@pytest.fixture
async def daemon_in_process(tmp_path: Path) -> AsyncIterator[tuple[int, str, Path]]:
    async with serving_in_process(tmp_path) as (_server, port, root):
        yield port, "in-process-token", root


@pytest.fixture
async def server_in_process(tmp_path: Path) -> AsyncIterator[tuple[Server, int, Path]]:
    async with serving_in_process(tmp_path) as served:
        yield served


async def test_a_reader_with_nothing_arriving_ends_after_the_stall_limit(
    daemon_in_process: tuple[int, str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from jst.daemon import streamhttp

    monkeypatch.setattr(streamhttp, "STALL_SECONDS", 0.5)  # 60 s in the daemon
    port, token, root = daemon_in_process
    (root / "s.mp4").write_bytes(payload(1000))
    async with io_session(port, token) as io, trio.open_nursery() as nursery:
        opened = await open_stream(io, 1, "s.mp4", 1000, [(0, 100)])
        reader = await start_reader(nursery, port, opened.url_path)
        await expect_need(io, 1)
        await reader.wait_ended()  # closed by the daemon, well before WAIT
        assert not reader.complete
        assert bytes(reader.body) == payload(1000)[:100]
        # The stream itself stays open: a player retries with a new Range.
        await send_have(io, 1, [(100, 1000)])
        async with HttpClient(port) as http:
            retry = await http.request("GET", opened.url_path, [("Range", "bytes=100-")])
        assert retry.status == 206
        assert retry.body == payload(1000)[100:]


def open_fds() -> int | None:
    """This process's open descriptors (the in-process daemon's among them), on Linux."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


async def test_a_reader_that_stops_reading_is_closed_after_the_send_stall_limit(
    server_in_process: tuple[Server, int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from jst.daemon import streamhttp
    from jst.daemon.streams import hub

    monkeypatch.setattr(streamhttp, "SEND_STALL_SECONDS", 0.5)  # 60 s in the daemon
    server, port, root = server_in_process
    size = 64 * MIB
    with (root / "big.mkv").open("wb") as file:
        file.truncate(size)  # sparse: reads as zeros, costs no disk
    half = size // 2
    async with io_session(port, "in-process-token") as io, trio.open_nursery() as nursery:
        opened = await open_stream(io, 1, "big.mkv", size, [(0, half)])
        found = hub(server.state).lookup(opened.token)
        assert found is not None
        # Another reader of the same stream, waiting for bytes that have not arrived: a
        # wait for data, not a stalled send, so the new limit must leave it alone.
        waiting = await start_reader(nursery, port, opened.url_path, f"bytes={half}-{half + 99}")
        assert await expect_need(io, 1) == (half, half + 100)
        idle_fds = open_fds()
        # The player that stops reading: a tiny receive buffer, a whole-file request, the
        # response head read, then nothing.
        player = trio.socket.socket()
        player.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await player.connect(("127.0.0.1", port))
        await player.send(f"GET {opened.url_path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        with trio.fail_after(10):
            head = await player.recv(4096)
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            while len(found.readers) < 2:  # noqa: ASYNC110 (its body is being sent)
                await trio.sleep(0.01)
            # Without reading a byte more: the daemon ends the response (generous bound).
            while len(found.readers) > 1:  # noqa: ASYNC110 (the daemon's own set)
                await trio.sleep(0.05)
        # Its connection is closed: what was already in flight, then EOF, not 64 MiB.
        received = len(head)
        with trio.fail_after(10):
            while chunk := await player.recv(1 << 20):
                received += len(chunk)
        player.close()
        assert received < half
        if idle_fds is not None:  # the daemon's socket and file descriptor are closed
            with trio.fail_after(10):
                while open_fds() != idle_fds:  # noqa: ASYNC110 (closed in the daemon)
                    await trio.sleep(0.05)
        # The other reader and the /io session carry on.
        assert not waiting.ended.is_set()
        await send_have(io, 1, [(half, size)])
        await waiting.wait_ended()
        assert (waiting.status, waiting.complete, bytes(waiting.body)) == (206, True, bytes(100))
        async with HttpClient(port) as http:
            again = await http.request("GET", opened.url_path, [("Range", "bytes=0-9")])
        assert (again.status, again.body) == (206, bytes(10))


async def test_a_file_shorter_than_claimed_or_a_folder_ends_the_response(
    daemon: RunningDaemon, io: IoClient
) -> None:
    put_file(daemon, "short.mp4", payload(500))
    (daemon.env.root / "folder.mp4").mkdir()
    short = await open_stream(io, 1, "short.mp4", 1000, [(0, 1000)])
    folder = await open_stream(io, 2, "folder.mp4", 1000, [(0, 1000)])
    async with trio.open_nursery() as nursery:
        cut = await start_reader(nursery, daemon.port, short.url_path)
        empty = await start_reader(nursery, daemon.port, folder.url_path)
        await cut.wait_ended()
        await empty.wait_ended()
    assert (cut.status, cut.complete, bytes(cut.body)) == (200, False, payload(500))
    assert (empty.status, empty.complete, bytes(empty.body)) == (200, False, b"")


async def test_stream_close_also_ends_a_response_that_is_sending(
    daemon: RunningDaemon, io: IoClient
) -> None:
    size = 64 * MIB
    path = daemon.env.root / "big.mkv"
    with path.open("wb") as file:
        file.truncate(size)  # sparse: reads as zeros, costs no disk
    opened = await open_stream(io, 1, "big.mkv", size, [(0, size)])
    stream = await trio.open_tcp_stream("127.0.0.1", daemon.port)
    async with stream:
        await stream.send_all(f"GET {opened.url_path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        first = await stream.receive_some(65536)
        assert first.startswith(b"HTTP/1.1 200 OK\r\n")
        # The player stops reading: the daemon is blocked on a full socket mid-body.
        await trio.sleep(0.3)
        await close_stream(io, 1)
        received = len(first)
        with trio.fail_after(10):
            while chunk := await stream.receive_some(1 << 20):
                received += len(chunk)
    assert received < size  # cut short: the connection closed, not the body completed
