"""Thousands of sockets on one /io session (issue 18): every echo right, nothing left after.

Correctness only; the speed of this case is measured by ``make bench`` (scale scenario)
and the shared instrument's ``scale.mjs``, never asserted here.
"""

from __future__ import annotations

import os
import resource
import struct
from collections.abc import Iterator

import pytest
import trio

from jst_tests.daemonproc import DaemonEnv, RunningDaemon, running_daemon
from jst_tests.httpclient import HttpClient
from jst_tests.ioclient import (
    TCP_CLOSE,
    TCP_CONNECT,
    TCP_CONNECTED,
    TCP_RECV,
    TCP_SEND,
    frame,
    io_session,
    parse,
)

SOCKETS = 3000
WINDOW = 300  # TCP_CONNECTs outstanding at once, as an engine would pace them
# The daemon, and this process (the echo server's side of every connection), need
# SOCKETS descriptors each and some to spare.
NOFILE_NEEDED = SOCKETS + 500


@pytest.fixture
def enough_fds() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < NOFILE_NEEDED:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {NOFILE_NEEDED} needed")
    if soft != resource.RLIM_INFINITY and soft < NOFILE_NEEDED:
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE_NEEDED, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
def big_daemon(enough_fds: None, daemon_env: DaemonEnv) -> Iterator[RunningDaemon]:
    with running_daemon(daemon_env) as running:  # inherits the raised limit
        yield running


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def stats(daemon: RunningDaemon) -> dict[str, int]:
    async with HttpClient(daemon.port) as http:
        reply = await http.request("GET", "/stats", daemon.auth)
        assert reply.status == 200
        result: dict[str, int] = reply.json()
        return result


def payload(sid: int, round_: int) -> bytes:
    return struct.pack("<II", sid, round_) + bytes([sid % 251]) * 56


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts fds through /proc")
async def test_three_thousand_sockets_on_one_session(big_daemon: RunningDaemon) -> None:
    daemon = big_daemon
    open_peers = [0]

    async def echo(stream: trio.SocketStream) -> None:
        open_peers[0] += 1
        try:
            async for data in stream:
                await stream.send_all(data)
        except trio.BrokenResourceError:
            pass
        finally:
            open_peers[0] -= 1

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, echo, 0)
        echo_port = listeners[0].socket.getsockname()[1]
        async with io_session(daemon.port, daemon.env.token):
            pass  # the daemon is fully started (lazy imports, log file) before the baseline
        await trio.sleep(0.3)
        idle_fds = fd_count(daemon.proc.pid)

        async with io_session(daemon.port, daemon.env.token) as client:
            ws = client.ws

            async def next_frame() -> tuple[int, int, bytes]:
                while True:
                    message = await ws.get_message()
                    if isinstance(message, bytes):
                        got = parse(message)
                        return got.opcode, got.request_id, got.payload

            # -- connect all, WINDOW outstanding --------------------------------------
            with trio.fail_after(120):
                sent = done = 0
                while done < SOCKETS:
                    while sent < SOCKETS and sent - done < WINDOW:
                        sent += 1
                        connect = struct.pack("<IH", sent, echo_port) + b"127.0.0.1"
                        await ws.send_message(frame(TCP_CONNECT, sent, connect))
                    opcode, rid, body = await next_frame()
                    assert opcode == TCP_CONNECTED, (opcode, body)
                    assert body == struct.pack("<IBI", rid, 0, 0), f"socket {rid} failed"
                    done += 1
            current = await stats(daemon)
            assert current["pending_tcp"] == SOCKETS
            assert fd_count(daemon.proc.pid) >= idle_fds + SOCKETS

            # -- two rounds: every socket sends at once, every echo comes back right ----
            for round_ in (1, 2):  # round 1 activates pending sockets, round 2 active ones
                expected = {sid: payload(sid, round_) for sid in range(1, SOCKETS + 1)}
                got = {sid: b"" for sid in expected}
                for sid, data in expected.items():
                    send = struct.pack("<I", sid) + data
                    await ws.send_message(frame(TCP_SEND, 0, send))
                with trio.fail_after(120):
                    complete = 0
                    while complete < SOCKETS:
                        opcode, _rid, body = await next_frame()
                        assert opcode == TCP_RECV, (opcode, body)
                        sid = struct.unpack_from("<I", body)[0]
                        before = len(got[sid])
                        got[sid] += body[4:]
                        assert expected[sid].startswith(got[sid]), f"socket {sid}: wrong data"
                        if before < len(expected[sid]) == len(got[sid]):
                            complete += 1
                assert got == expected
            current = await stats(daemon)
            assert (current["tcp_sockets"], current["pending_tcp"]) == (SOCKETS, 0)
            assert open_peers[0] == SOCKETS

            # -- a few closes by the client, one by a peer, on the same session -------
            for sid in (1, 2, 3):
                await ws.send_message(frame(0x14, 0, struct.pack("<I", sid)))
            with trio.fail_after(30):
                closed: set[int] = set()
                while closed != {1, 2, 3}:
                    opcode, _rid, body = await next_frame()
                    if opcode == TCP_CLOSE:
                        closed.add(struct.unpack_from("<I", body)[0])

        # -- the WebSocket is gone: every socket closed, fds back to idle -----------------
        with trio.fail_after(30):
            while True:  # polled: the daemon's fds have no event to wait for
                if fd_count(daemon.proc.pid) <= idle_fds and open_peers[0] == 0:
                    break
                await trio.sleep(0.05)
        current = await stats(daemon)
        assert current["tcp_sockets"] == current["pending_tcp"] == 0
        assert current["ws_connections"] == 0
        nursery.cancel_scope.cancel()
