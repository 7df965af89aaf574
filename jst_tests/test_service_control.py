"""``/control``, ``GET /roots``, ``DELETE /roots/{key}``, ``POST /open`` on a daemon that
``jst service`` supervises (SERVICE.md §3, §5, §6), with real processes."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import open_websocket_url

from jst_tests.httpclient import HttpClient
from jst_tests.ioclient import AUTH, AUTH_RESULT, ERROR, HELLO, SERVER_HELLO, IoClient, frame
from jst_tests.serviceproc import ServiceEnv, oneshot, running_service, write_profile

ROOTS_CHANGED, EVENT, OPEN_PICKER = 0xE0, 0xE1, 0xE2
MAGNET = "magnet:?xt=urn:btih:" + "d" * 40 + "&dn=service"
LINK_HANDLER = str(Path(sys.executable).parent / "jst-link-handler")
ROOT_KEY = "0123456789abcdef"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[ServiceEnv]:
    service_env = ServiceEnv(tmp_path)
    service_env.setup()
    yield service_env
    service_env.cleanup()


@pytest.fixture
def downloads(env: ServiceEnv) -> Path:
    folder = env.base / "downloads"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "b.txt").write_text("x")
    write_profile(env, {ROOT_KEY: folder})
    return folder


@pytest.fixture
def service(env: ServiceEnv) -> Iterator[dict[str, Any]]:
    """A running service and this install's endpoint."""
    with running_service(env):
        reply, proc = oneshot(env)
        assert reply is not None, proc.stderr
        assert "port" in reply, reply
        yield reply


@asynccontextmanager
async def control(endpoint: dict[str, Any], auth: bool = True) -> AsyncIterator[IoClient]:
    url = f"ws://127.0.0.1:{endpoint['port']}/control"
    async with open_websocket_url(url) as ws:
        client = IoClient(ws)
        if auth:
            await client.authenticate(endpoint["token"])
        yield client


async def roots_frame(client: IoClient) -> list[dict[str, Any]]:
    got = await client.next(15)
    assert (got.opcode, got.request_id) == (ROOTS_CHANGED, 0), got
    roots: list[dict[str, Any]] = json.loads(got.payload)
    return roots


def link(env: ServiceEnv, magnet: str = MAGNET) -> None:
    result = subprocess.run(
        [LINK_HANDLER, magnet], capture_output=True, text=True, timeout=60, check=False,
        env=env.environ(JST_LINK_HANDLER_DIALOG="0"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


async def http(
    endpoint: dict[str, Any], method: str, target: str, body: bytes = b"", token: bool = True
) -> tuple[int, bytes]:
    headers = [("Authorization", f"Bearer {endpoint['token']}")] if token else []
    if body:
        headers.append(("Content-Type", "application/json"))
    async with HttpClient(int(endpoint["port"])) as client:
        reply = await client.request(method, target, headers, body)
    return reply.status, reply.body


async def test_roots_after_auth_and_the_picker_adds_one(
    env: ServiceEnv, downloads: Path, service: dict[str, Any]
) -> None:
    async with control(service) as client:
        roots = await roots_frame(client)
        assert roots == [
            {"key": ROOT_KEY, "uri": str(downloads), "displayName": "downloads", "available": True}
        ]
        picked = env.base / "picked"
        picked.mkdir()
        env.picker_answer.write_text(str(picked))
        await client.send(OPEN_PICKER)
        roots = await roots_frame(client)
        assert [r["uri"] for r in roots] == [str(downloads), os.path.realpath(picked)]
        assert roots[1]["displayName"] == "picked"
        assert roots[1]["available"] is True
    on_disk = env.profiles()[0]["download_roots"]
    assert [r["path"] for r in on_disk] == [str(downloads), os.path.realpath(picked)]
    status, body = await http(service, "GET", "/roots")
    assert status == 200
    assert json.loads(body) == {"roots": roots}


async def test_control_needs_the_token(service: dict[str, Any]) -> None:
    async with control(service, auth=False) as client:
        await client.send(HELLO, 1)
        assert (await client.next()).opcode == SERVER_HELLO
        await client.send(AUTH, 2, b"\x00wrong\x00\x00")
        result = await client.next()
        assert (result.opcode, result.payload[:1]) == (AUTH_RESULT, b"\x01")


async def test_link_events_reach_every_client_once(
    env: ServiceEnv, service: dict[str, Any]
) -> None:
    async with control(service) as first, control(service) as second:
        await roots_frame(first)
        await roots_frame(second)
        await trio.to_thread.run_sync(link, env)
        for client in (first, second):
            got = await client.next(15)
            assert (got.opcode, got.request_id) == (EVENT, 0)
            assert json.loads(got.payload) == {"event": "MagnetAdded", "payload": {"link": MAGNET}}
        with trio.move_on_after(1.0) as quiet:
            await first.next(2)
        assert quiet.cancelled_caught  # no second copy


async def test_events_are_kept_while_no_client_is_connected(
    env: ServiceEnv, service: dict[str, Any]
) -> None:
    await trio.to_thread.run_sync(link, env)  # nobody listening: the service keeps it
    other = MAGNET.replace("dn=service", "dn=second")
    await trio.to_thread.run_sync(link, env, other)
    async with control(service) as client:
        await roots_frame(client)
        events = [json.loads((await client.next(15)).payload) for _ in range(2)]
        assert [e["payload"]["link"] for e in events] == [MAGNET, other]  # in order
    async with control(service) as later:  # already delivered: not again
        await roots_frame(later)
        with trio.move_on_after(1.0) as quiet:
            await later.next(2)
        assert quiet.cancelled_caught


async def test_bad_control_frames_are_answered_and_change_nothing(
    env: ServiceEnv, downloads: Path, service: dict[str, Any]
) -> None:
    before = env.rpc_info.read_bytes()
    async with control(service) as client:
        await roots_frame(client)
        await client.send(0x10, 77, b"\x01\x00\x00\x00\x50\x00127.0.0.1")  # an /io opcode
        got = await client.next()
        assert (got.opcode, got.request_id, got.payload) == (ERROR, 77, b"Unknown opcode")
        await client.ws.send_message(b"\x02\xe2\x00\x00\x09\x00\x00\x00")  # version 2
        got = await client.next()
        assert (got.opcode, got.request_id, got.payload) == (ERROR, 9, b"Invalid protocol version")
        await client.send(OPEN_PICKER, 0, b"x" * (70 * 1024))
        got = await client.next()
        assert (got.opcode, got.payload) == (ERROR, b"Message too large")
        await client.send(0xE0, 5, b"[]")  # a daemon-to-client opcode from the client
        assert (await client.next()).payload == b"Unknown opcode"
        # The session still works.
        await trio.to_thread.run_sync(link, env)
        assert (await client.next(15)).opcode == EVENT
    assert env.rpc_info.read_bytes() == before


async def test_delete_root(env: ServiceEnv, downloads: Path, service: dict[str, Any]) -> None:
    async with control(service) as client:
        assert len(await roots_frame(client)) == 1
        status, _ = await http(service, "DELETE", f"/roots/{ROOT_KEY}", token=False)
        assert status == 401
        status, body = await http(service, "DELETE", f"/roots/{ROOT_KEY}")
        assert (status, json.loads(body)) == (200, {"removed": ROOT_KEY})
        assert await roots_frame(client) == []
        status, body = await http(service, "DELETE", f"/roots/{ROOT_KEY}")
        assert (status, body) == (404, f"Root not found: {ROOT_KEY}".encode())
    assert env.profiles()[0]["download_roots"] == []
    assert downloads.exists()  # files on disk are untouched


async def test_open_follows_the_containment_rule(
    env: ServiceEnv, downloads: Path, service: dict[str, Any]
) -> None:
    def body(**fields: Any) -> bytes:
        return json.dumps({"root_key": ROOT_KEY, "reveal": False, **fields}).encode()

    status, _ = await http(service, "POST", "/open", body(path="a/b.txt"))
    assert status == 200
    status, _ = await http(service, "POST", "/open", body(path="a/b.txt", reveal=True))
    assert status == 200
    log = env.opener_log.read_text().splitlines()
    assert log == [str(downloads / "a" / "b.txt"), str(downloads / "a")]
    status, text = await http(service, "POST", "/open", body(path="../../etc/passwd"))
    assert status == 403
    assert b"Path escape detected" in text
    status, text = await http(service, "POST", "/open", body(path="a", root_key="nope"))
    assert (status, text) == (404, b"Root not found: nope")
    for bad in (b"{", b"[]", b'{"root_key": 1, "path": "a"}', body(path="a", reveal="yes")):
        status, _ = await http(service, "POST", "/open", bad)
        assert status == 400
    assert len(env.opener_log.read_text().splitlines()) == 2  # nothing else was opened


async def test_open_reports_the_opener_failure(env: ServiceEnv, downloads: Path) -> None:
    with running_service(env, FAKE_OPENER_STATUS="4"):
        reply, _ = oneshot(env)
        assert reply is not None
        payload = json.dumps({"root_key": ROOT_KEY, "path": "a/b.txt", "reveal": False})
        status, text = await http(reply, "POST", "/open", payload.encode())
    assert status == 502
    assert text.startswith(b"xdg-open failed (exit code Some(4))")


@pytest.mark.slow
async def test_availability_change_is_pushed(
    env: ServiceEnv, downloads: Path, service: dict[str, Any]
) -> None:
    async with control(service) as client:
        assert (await roots_frame(client))[0]["available"] is True
        moved = downloads.with_name("moved")
        downloads.rename(moved)
        assert (await roots_frame(client))[0]["available"] is False  # within 10 s (§ seed)
        moved.rename(downloads)
        assert (await roots_frame(client))[0]["available"] is True


async def test_an_endpoint_request_that_changes_nothing_sends_no_roots(
    env: ServiceEnv, downloads: Path, service: dict[str, Any]
) -> None:
    async with control(service) as client:
        assert len(await roots_frame(client)) == 1
        reply, _ = await trio.to_thread.run_sync(oneshot, env)
        assert reply is not None
        assert reply["port"] == service["port"]
        with trio.move_on_after(1.0) as quiet:
            await client.next(2)
        assert quiet.cancelled_caught


async def test_cors_follows_the_calling_extension(service: dict[str, Any]) -> None:
    origin = "chrome-extension://abcdefghijklmnopabcdefghijklmnop"  # hostproc.ORIGIN's id
    async with HttpClient(int(service["port"])) as client:
        reply = await client.request("GET", "/health", [("Origin", origin)])
    assert reply.status == 200
    assert reply.header("access-control-allow-origin") == origin


# --- /control before AUTH: the same bounds as /io (issue 12) ------------------------------


def _control_after_hello(port: int) -> socket.socket:
    """A raw /control WebSocket that has said HELLO (answered) and nothing else."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(
        f"GET /control HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    assert sock.recv(4096).startswith(b"HTTP/1.1 101 ")
    hello = frame(HELLO, 1)
    sock.sendall(bytes([0x82, 0x80 | len(hello)]) + b"\0\0\0\0" + hello)
    assert sock.recv(4096)[2:] == frame(SERVER_HELLO, 1)
    return sock


def _closed_within(sock: socket.socket, seconds: float) -> bytes | None:
    """What the daemon sent before closing ``sock`` within ``seconds``; None if it did not."""
    got = b""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return None
        except ConnectionResetError:
            return got
        if not data:
            return got
        got += data
    return None


def test_control_refuses_a_large_message_before_auth(service: dict[str, Any]) -> None:
    """A client without the token cannot make the daemon buffer a 64 MiB message."""
    with _control_after_hello(int(service["port"])) as sock:
        # The header of a 32 MiB binary message, and a first piece of it.
        sock.sendall(b"\x82\xff" + (32 << 20).to_bytes(8, "big") + b"\0\0\0\0" + b"x" * 4096)
        got = _closed_within(sock, 10.0)
        assert got is not None, "the daemon waited for the rest of a 32 MiB pre-AUTH message"
        assert got[:4] == b"\x88\x02\x03\xf1"  # Close 1009


def test_control_without_auth_is_closed_after_the_auth_timeout(service: dict[str, Any]) -> None:
    """HELLO answered, then silence: dropped like an /io session (not held forever)."""
    with _control_after_hello(int(service["port"])) as sock:
        assert _closed_within(sock, 30.0) is not None


def test_a_bad_line_on_the_daemon_channel_does_not_bring_the_service_down(
    env: ServiceEnv, service: dict[str, Any]
) -> None:
    """A channel's protocol error (a line that is not JSON, or nested too deeply for
    json.loads) ends that channel only. It used to escape ``Peer.run`` inside trio's
    exception group and end the whole service, daemons included."""
    (daemon,) = env.daemons()
    link = next(a for a in daemon.cmdline() if a.startswith("unix:")).removeprefix("unix:")
    deep = b"[" * 20_000 + b"]" * 20_000
    for line in (b"garbage", deep):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(link)
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(line + b"\n")
                assert sock.recv(4096) == b""  # this channel is closed, only this one
    with socket.socket(socket.AF_UNIX) as sock:  # service.sock: an error reply
        sock.settimeout(5)
        sock.connect(str(env.socket))
        sock.sendall(deep + b"\n")
        assert "error" in json.loads(sock.makefile("rb").readline())
    assert env.status().get("pid"), "the service is gone"
    assert daemon.is_running()
