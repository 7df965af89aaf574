"""Hostile input against a live daemon: no header or path escapes a root or hurts the process."""

from __future__ import annotations

import base64
import http.client
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jst_tests.daemonproc import ROOT_KEY, DaemonEnv, RunningDaemon, running_daemon
from jst_tests.httpclient import HttpClient
from jst_tests.ioclient import frame, io_session

path_parts = st.sampled_from(
    ["..", ".", "", "a", "b..c", "/", "\\", "C:", "\0", "é", "%2e%2e", "~", " "]
)
hostile_paths = st.lists(path_parts, max_size=6).map("".join) | st.text(max_size=30)
header_values = st.binary(max_size=40).filter(
    lambda b: b"\r" not in b and b"\n" not in b and b.strip() == b
)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    env = DaemonEnv(tmp_path_factory.mktemp("fuzz"))
    env.root.mkdir()
    env.write_rpc_info()
    with running_daemon(env) as daemon:
        yield daemon


def everything_outside_root(base: Path, root: Path) -> set[str]:
    """Every path under ``base`` but the root's contents and the daemon's config dir (logs)."""
    config = base / "config"
    return {
        str(p)
        for p in base.rglob("*")
        if root not in p.parents and p != root and config not in p.parents and p != config
    }


def send(
    daemon: RunningDaemon, method: str, target: str, headers: dict[str, bytes], body: bytes = b""
) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=10)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        return conn.getresponse().status
    finally:
        conn.close()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rel=hostile_paths, offset=header_values, length=header_values)
def test_hostile_paths_and_headers_never_escape_or_crash(
    live: RunningDaemon, rel: str, offset: bytes, length: bytes
) -> None:
    before = everything_outside_root(live.env.base, live.env.root)
    encoded = base64.b64encode(rel.encode("utf-8", "surrogatepass"))
    common = {"X-JST-Auth": live.env.token.encode(), "X-Path-Base64": encoded}
    write = send(live, "POST", f"/write/{ROOT_KEY}", {**common, "X-Offset": offset}, b"data")
    read = send(
        live, "GET", f"/read/{ROOT_KEY}", {**common, "X-Offset": offset, "X-Length": length}
    )
    assert write in (200, 400, 404, 500)
    assert read in (200, 400, 404, 500)
    assert everything_outside_root(live.env.base, live.env.root) == before
    assert live.proc.poll() is None
    assert send(live, "GET", "/health", {}) == 200


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rel=hostile_paths)
def test_hostile_json_paths_never_delete_outside_or_the_root(live: RunningDaemon, rel: str) -> None:
    import json

    (live.env.root / "keep").write_bytes(b"x")
    body = json.dumps({"path": rel, "root_key": ROOT_KEY}).encode()
    headers = {"X-JST-Auth": live.env.token.encode(), "Content-Type": b"application/json"}
    status = send(live, "POST", "/ops/delete", headers, body)
    assert status in (200, 400, 500)
    assert live.env.root.is_dir()
    assert os.path.exists(live.env.rpc_info)


# -- /io frames -------------------------------------------------------------------------

# Requests that could reach beyond loopback are built with loopback addresses only (a
# random host name would be resolved over the network); multicast joins are left out
# (they send IGMP reports; see test_daemon_io's namespaced multicast test).
loopback = st.sampled_from(["127.0.0.1", "::1", "[::1]", ""])
ports = st.integers(0, 65535)
ids = st.integers(0, 2**32 - 1) | st.integers(1, 5)
structured = st.one_of(
    st.builds(
        lambda sid, port, host: (0x10, struct.pack("<IH", sid, port) + host.encode()),
        ids,
        ports,
        loopback,
    ),
    st.builds(
        lambda sid, port, host, data: (
            0x22,
            struct.pack("<IHH", sid, port, len(host)) + host.encode() + data,
        ),
        ids,
        ports,
        st.sampled_from(["127.0.0.1", "::1"]),
        st.binary(max_size=20),
    ),
    st.builds(
        lambda sid, host: (0x15, struct.pack("<IH", sid, 0) + host.encode()),
        ids,
        st.sampled_from(["127.0.0.1", ""]),
    ),
)
unstructured = st.tuples(
    st.integers(0, 255).filter(lambda op: op not in (0x10, 0x15, 0x22, 0x25)),
    st.binary(max_size=24),
)
io_frames = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 2**32 - 1), structured | unstructured),
    max_size=12,
)
SOCKET_COUNTERS = (
    "tcp_sockets",
    "pending_tcp",
    "pending_connects",
    "tcp_servers",
    "udp_sockets",
    "ws_connections",
)
INVALID_VERSION = b"Invalid protocol version"


async def fuzz_session(
    port: int, token: str, frames: list[tuple[int, int, tuple[int, bytes]]]
) -> None:
    async with io_session(port, token) as client:
        for version, request_id, (opcode, payload) in frames:
            await client.ws.send_message(frame(opcode, request_id, payload, version=version or 1))
            if version > 1:
                # A wrong version is answered with ERROR and ends the session (§6.2).
                reply = await client.expect(0x7F)
                while reply.payload == b"Unknown opcode":  # answers to earlier frames
                    reply = await client.expect(0x7F)
                assert (reply.request_id, reply.payload) == (request_id, INVALID_VERSION)
                return
        await client.send(0x55, 4242)  # still alive
        reply = await client.expect(0x7F)
        while reply.request_id != 4242:
            reply = await client.expect(0x7F)
        assert reply.payload == b"Unknown opcode"


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(frames=io_frames)
def test_fuzzed_io_frames_never_crash_a_session(
    live: RunningDaemon, frames: list[tuple[int, int, tuple[int, bytes]]]
) -> None:
    trio.run(fuzz_session, live.port, live.env.token, frames)
    assert live.proc.poll() is None


def test_fuzzing_left_no_socket_behind(live: RunningDaemon) -> None:
    """Runs after the fuzz test (same module daemon): every session's sockets are gone."""

    async def settled() -> None:
        with trio.fail_after(10):
            while True:
                async with HttpClient(live.port) as http:
                    reply = await http.request("GET", "/stats", live.auth)
                current: dict[str, int] = reply.json()
                if all(current[k] == 0 for k in SOCKET_COUNTERS):
                    return
                await trio.sleep(0.05)

    trio.run(settled)
    # Only the listening socket, the log file and std streams stay open (no leaked fds).
    assert len(os.listdir(f"/proc/{live.proc.pid}/fd")) < 20
