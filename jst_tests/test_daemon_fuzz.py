"""Hostile input against a live daemon: no header or path escapes a root or hurts the process."""

from __future__ import annotations

import base64
import http.client
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jst_tests.daemonproc import ROOT_KEY, DaemonEnv, RunningDaemon, running_daemon

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
