"""The native-host under hostile input (issue 12): Native Messaging frames that used to
crash it, hostile link-endpoint clients, and file names that are not UTF-8."""

from __future__ import annotations

import contextlib
import hmac
import json
import resource
import selectors
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
import trio

from jst.host import linkrpc, messages
from jst.host.nm import encode_frame
from jst_tests import hostproc
from jst_tests.faults.harness import alive, open_fds
from jst_tests.hostproc import HostEnv, HostProcess, http, running_host

DEEP_ARRAY = b"[" * 1000 + b"]" * 1000


@pytest.fixture
def host(host_env: HostEnv) -> Iterator[HostProcess]:
    with running_host(host_env) as h:
        yield h


def frame(body: bytes) -> bytes:
    return struct.pack("<I", len(body)) + body


# -- item 4: Native Messaging frames ------------------------------------------------------------


def test_frames_that_used_to_crash_the_host_are_answered_or_skipped(host: HostProcess) -> None:
    host.handshake()
    daemon = host.daemon_pid()
    handshake = json.dumps(
        {"op": "handshake", "extensionId": "e" * 32, "installId": host.env.install_id, "id": "h2"}
    ).encode()
    host.send_raw(
        frame(handshake)  # an earlier request: its answer must not be lost
        + frame(DEEP_ARRAY)  # no id: logged and skipped
        + frame(b'{"id":"deep","op":"handshake","x":' + DEEP_ARRAY + b"}")
        + frame(b'{"id":"\\ud800","op":"pickDownloadDirectory!"}')  # a lone surrogate id
        + frame(b'{"id":"s","op":"deleteDownloadRoot","key":"\\udc00"}')
    )
    replies = {}
    for _ in range(4):
        reply = host.recv()
        replies[reply["id"]] = reply
    assert replies["h2"]["ok"] is True
    assert replies["h2"]["type"] == "DaemonInfo"
    for request_id in ("deep", "\ud800", "s"):
        assert replies[request_id]["ok"] is False
        assert replies[request_id]["error"]
    assert host.no_frame_within(0.5)
    assert host.proc.poll() is None
    assert alive(daemon)
    assert host.handshake()["payload"]["port"] == replies["h2"]["payload"]["port"]
    assert host.daemon_pid() == daemon


def test_a_deep_frame_without_readable_id_is_logged_not_answered() -> None:
    assert messages.parse_request(DEEP_ARRAY) == messages.Rejected(
        None, "the request is nested too deeply"
    )
    rejected = messages.parse_request(b'{"op":"x","a":' + DEEP_ARRAY + b',"id":"late"}')
    assert rejected == messages.Rejected("late", "the request is nested too deeply")


def test_a_lone_surrogate_id_is_echoed_as_valid_utf8_json() -> None:
    data = encode_frame(messages.failure("\ud800", "Unknown operation"))
    body = data[4:]
    assert json.loads(body.decode("utf-8"))["id"] == "\ud800"


# -- item 2: 1,100 stalled connections under ulimit -n 1024 --------------------------------------

STALLED = 1100


@pytest.fixture
def fd_room() -> Iterator[None]:
    """Room in this test process for the stalled connections it opens."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, STALLED * 2 + 512)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def limited(nofile: str) -> list[str]:
    """The host's command line under ``prlimit --nofile=<soft>:<hard>``."""
    return ["prlimit", f"--nofile={nofile}", "--", *hostproc.HOST]


def unix_connect(path: str, seconds: float = 5.0) -> socket.socket:
    """Connect, retrying (bounded) while the listener's backlog is full (EAGAIN)."""
    deadline = time.monotonic() + seconds
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(path)
        except BlockingIOError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)
            continue
        sock.setblocking(True)
        return sock


def stall(profile: dict[str, Any]) -> list[socket.socket]:
    """1,100 connections that never finish a request: silent, half a head, or a refused
    POST whose body never comes; a few on the Unix socket too."""
    port = int(profile["port"])
    unix_path = str(profile["jst_link"]).removeprefix("unix:")
    partial = b"GET /health?token="
    refused = (
        f"POST /add-magnet?token=wrong HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
    ).encode()
    socks = []
    for n in range(STALLED):
        if n % 20 == 19:
            sock = unix_connect(unix_path)
        else:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        socks.append(sock)
        with contextlib.suppress(OSError):
            sock.sendall([b"", partial, refused][n % 3])
    return socks


def all_dropped(socks: list[socket.socket], seconds: float) -> int:
    """Wait (bounded) until the host has closed every socket; the number still open."""
    selector = selectors.DefaultSelector()
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, sock)
    open_count = len(socks)
    deadline = time.monotonic() + seconds
    while open_count and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.5):
            sock = key.data
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                selector.unregister(sock)
                open_count -= 1
    selector.close()
    return open_count


def test_stalled_link_connections_do_not_starve_a_handshake(
    host_env: HostEnv, fd_room: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hostproc, "HOST", limited("1024:1024"))
    with running_host(host_env) as host:
        profile = host_env.wait_for_profile(host.pid)
        socks = stall(profile)
        try:
            started = time.monotonic()
            reply = host.handshake()  # starts the daemon and rewrites rpc-info.json
            print(f"handshake answered in {time.monotonic() - started:.2f} s under the flood")
            assert reply["ok"] is True
            assert open_fds(host.pid) < 300  # the flood costs a bounded number of fds
            assert all_dropped(socks, 20) == 0
        finally:
            for sock in socks:
                sock.close()
        port, token = int(profile["port"]), profile["token"]
        assert http(port, f"/health?token={token}")[0] == 200
        assert host.proc.poll() is None


def test_the_soft_open_file_limit_is_raised_to_the_hard_limit(
    host_env: HostEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hostproc, "HOST", limited("256:2048"))
    with running_host(host_env) as host:
        host_env.wait_for_profile(host.pid)
        assert psutil.Process(host.pid).rlimit(psutil.RLIMIT_NOFILE) == (2048, 2048)


def raw_request(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data`` as is; everything the host answers before closing."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def test_a_refused_request_is_answered_without_waiting_for_its_body(host: HostProcess) -> None:
    port = int(host.env.wait_for_profile(host.pid)["port"])
    head = (
        f"POST /add-magnet?token=wrong HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
    ).encode()
    # The body never comes: the 403 does (within the socket timeout, not the stall bound).
    assert raw_request(port, head, timeout=4).startswith(b"HTTP/1.1 403 ")


# -- item 11: Host header (DNS rebinding) ---------------------------------------------------------


def test_only_loopback_host_values_are_served(host: HostProcess) -> None:
    profile = host.env.wait_for_profile(host.pid)
    port, token = int(profile["port"]), profile["token"]

    def status(host_header: str | None, version: str = "1.1") -> bytes:
        lines = [f"GET /health?token={token} HTTP/{version}"]
        if host_header is not None:
            lines.append(f"Host: {host_header}")
        return raw_request(port, ("\r\n".join(lines) + "\r\n\r\n").encode())[:12]

    for good in (f"127.0.0.1:{port}", f"localhost:{port}", f"LocalHost:{port}", f"[::1]:{port}"):
        assert status(good) == b"HTTP/1.1 200", good
    assert status(None, "1.0") == b"HTTP/1.1 200"
    for bad in (f"evil.example:{port}", "evil.example", f"127.0.0.1:{port + 1}", "localhost"):
        assert status(bad) == b"HTTP/1.1 403", bad


# -- item 12: the token is compared in constant time ----------------------------------------------


def test_the_link_token_is_compared_with_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    endpoint = linkrpc.Endpoint("the-token", "v", 1)
    for given, status in (("the-token", 200), ("the-tokem", 403), ("é", 403)):
        reply = linkrpc.handle(endpoint, "GET", f"/health?token={given}".encode(), [], b"")
        assert reply.status == status
    assert len(calls) == 3


def test_checks_keep_the_originals_order() -> None:
    endpoint = linkrpc.Endpoint("t", "v", 1)
    as_json = [(b"content-type", b"application/json")]

    def status(target: bytes, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> int:
        return linkrpc.handle(endpoint, "POST", target, headers, body).status

    assert status(b"/add-magnet", as_json) == 400  # no token parameter
    assert status(b"/add-magnet?token=x", [(b"content-type", b"text/plain")]) == 415
    assert status(b"/add-magnet?token=x", [*as_json, (b"content-length", b"3000000")]) == 413
    # With the whole body at hand, its checks come before the token's (the original's order).
    assert status(b"/add-magnet?token=x", as_json, b"{") == 400
    assert status(b"/add-magnet?token=x", as_json, b'{"magnet":"m"}') == 403
    assert status(b"/add-magnet?token=t", as_json, b"{") == 400
    assert status(b"/add-magnet?token=t", as_json, b"[" * 5000) == 400


async def test_the_connection_limit_drops_the_oldest_unauthorised_connection() -> None:
    limit = linkrpc.ConnectionLimit(3)
    scopes = [trio.CancelScope() for _ in range(5)]
    keys = [object() for _ in range(5)]
    assert all(limit.admit(keys[n], scopes[n]) for n in range(3))
    assert limit.mark_busy(keys[0])  # a token holder
    assert limit.admit(keys[3], scopes[3])  # full: the oldest evictable one (1) goes
    assert [s.cancel_called for s in scopes[:4]] == [False, True, False, False]
    assert not limit.mark_busy(keys[1])  # already evicted: never counted as busy
    assert limit.mark_busy(keys[2])
    assert limit.mark_busy(keys[3])
    assert not limit.admit(keys[4], scopes[4])  # every slot is a token holder's
    limit.release(keys[0], busy=True)
    assert limit.admit(keys[4], scopes[4])
    assert limit.evicted == 1
