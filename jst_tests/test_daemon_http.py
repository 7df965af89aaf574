"""Every route of the io-daemon's HTTP API (PROTOCOL.md §5), against a real process."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import trio

from jst_tests.daemonproc import ROOT_KEY, RunningDaemon, b64
from jst_tests.httpclient import HttpClient, raw_exchange

MIB = 1024 * 1024


def path_headers(
    daemon: RunningDaemon, rel: str | bytes, **extra: str
) -> list[tuple[str | bytes, str | bytes]]:
    headers: list[tuple[str | bytes, str | bytes]] = [*daemon.auth, ("X-Path-Base64", b64(rel))]
    headers += [(k.replace("_", "-"), v) for k, v in extra.items()]
    return headers


def json_headers(daemon: RunningDaemon) -> list[tuple[str | bytes, str | bytes]]:
    return [*daemon.auth, ("Content-Type", "application/json")]


async def write(
    client: HttpClient, daemon: RunningDaemon, rel: str, body: bytes, offset: int | None = None
) -> int:
    extra = {} if offset is None else {"X_Offset": str(offset)}
    reply = await client.request(
        "POST", f"/write/{ROOT_KEY}", path_headers(daemon, rel, **extra), body
    )
    return reply.status


# --- /health, status lines, auth -------------------------------------------------------


async def test_health_needs_no_token_and_says_ok(client: HttpClient) -> None:
    reply = await client.request("GET", "/health")
    assert (reply.status, reply.reason, reply.text) == (200, b"OK", "ok")
    assert reply.header("content-type") == "text/plain; charset=utf-8"


async def test_connection_close_is_honoured_and_nothing_after_it_is_answered(
    daemon: RunningDaemon,
) -> None:
    # A probe's "Connection: close": one answer that says so, then the daemon closes; a
    # request the client pipelined after it is not served.
    first = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    second = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    stream = await trio.open_tcp_stream("127.0.0.1", daemon.port)
    received = b""
    async with stream:
        await stream.send_all(first + second)
        with trio.fail_after(5):  # the daemon's close ends this loop, not the bound
            while chunk := await stream.receive_some(65536):
                received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nconnection: close" in head.lower()
    assert body == b"ok"  # and no second response


async def test_every_other_route_answers_401_with_an_empty_body_without_a_token(
    client: HttpClient,
) -> None:
    for method, target in [
        ("POST", f"/write/{ROOT_KEY}"),
        ("GET", f"/read/{ROOT_KEY}"),
        ("GET", "/stats"),
        ("POST", "/control/ping"),
        ("GET", "/no/such/route"),
        ("DELETE", "/stats"),
    ]:
        reply = await client.request(method, target)
        assert (reply.status, reply.body) == (401, b""), (method, target)
        assert reply.header("content-type") is None


async def test_token_is_accepted_in_x_jst_auth_or_as_bearer(
    client: HttpClient, daemon: RunningDaemon
) -> None:
    token = daemon.env.token
    assert (await client.request("POST", "/control/ping", [("X-JST-Auth", token)])).text == "pong"
    assert (
        await client.request("POST", "/control/ping", [("Authorization", f"Bearer {token}")])
    ).status == 200
    # X-JST-Auth alone decides when present: a wrong one is not rescued by a good Bearer.
    both = [("X-JST-Auth", "wrong"), ("Authorization", f"Bearer {token}")]
    assert (await client.request("POST", "/control/ping", both)).status == 401
    assert (
        await client.request("POST", "/control/ping", [("Authorization", f"bearer {token}")])
    ).status == 401
    assert (
        await client.request("POST", "/control/ping", [("X-JST-Auth", token + "x")])
    ).status == 401


async def test_unknown_path_is_404_and_wrong_method_is_405_once_authenticated(
    client: HttpClient, daemon: RunningDaemon
) -> None:
    assert (await client.request("GET", "/nope", daemon.auth)).status == 404
    assert (await client.request("GET", "/health/", daemon.auth)).status == 404
    assert (await client.request("GET", "/write/", daemon.auth)).status == 404
    reply = await client.request("GET", "/control/ping", daemon.auth)
    assert (reply.status, reply.body) == (405, b"")
    assert (await client.request("GET", "/files/ensure_dir", daemon.auth)).status == 405
    assert (await client.request("GET", "/hash/sha1", daemon.auth)).status == 405
    assert (await client.request("POST", "/health")).status == 405


# --- CORS ------------------------------------------------------------------------------


async def test_preflight_on_any_path_is_200_without_token(
    client: HttpClient, daemon: RunningDaemon
) -> None:
    origin = f"chrome-extension://{daemon.env.extension_id}"
    reply = await client.request(
        "OPTIONS", "/write/x", [("Origin", origin), ("Access-Control-Request-Method", "POST")]
    )
    assert (reply.status, reply.body) == (200, b"")
    assert reply.header("access-control-allow-origin") == origin
    assert reply.header("access-control-allow-methods") == "GET,POST,PUT,DELETE,OPTIONS"
    assert "x-path-base64" in (reply.header("access-control-allow-headers") or "")
    assert reply.header("access-control-max-age") == "86400"
    assert (
        reply.header("vary")
        == "origin, access-control-request-method, access-control-request-headers"
    )


async def test_extension_origin_gets_cors_on_health_and_on_errors(
    client: HttpClient, daemon: RunningDaemon
) -> None:
    origin = f"chrome-extension://{daemon.env.extension_id}"
    health = await client.request("GET", "/health", [("Origin", origin)])
    assert health.header("access-control-allow-origin") == origin
    denied = await client.request("GET", "/stats", [("Origin", origin)])
    assert denied.status == 401
    assert denied.header("access-control-allow-origin") == origin
    for allowed in ("https://new.jstorrent.com", "https://jstorrent.com"):
        reply = await client.request("GET", "/health", [("Origin", allowed)])
        assert reply.header("access-control-allow-origin") == allowed


async def test_other_origins_get_no_allow_origin_but_still_vary(client: HttpClient) -> None:
    for origin in ("https://evil.example", "chrome-extension://someotherextension", "null"):
        reply = await client.request("GET", "/health", [("Origin", origin)])
        assert reply.status == 200
        assert reply.header("access-control-allow-origin") is None
        assert reply.header("vary") is not None
    preflight = await client.request("OPTIONS", "/health", [("Origin", "https://evil.example")])
    assert preflight.status == 200
    assert preflight.header("access-control-allow-origin") is None
    assert preflight.header("access-control-max-age") == "86400"


# --- POST /write and GET /read ---------------------------------------------------------


async def test_write_creates_parents_and_the_file_is_complete_before_the_200(
    client: HttpClient, daemon: RunningDaemon
) -> None:
    data = os.urandom(300_000)
    assert await write(client, daemon, "Some Torrent/sub dir/file.bin", data) == 200
    assert (daemon.env.root / "Some Torrent" / "sub dir" / "file.bin").read_bytes() == data


async def test_write_at_offset_does_not_truncate(client: HttpClient, daemon: RunningDaemon) -> None:
    assert await write(client, daemon, "hello.txt", b"Hello, World!") == 200
    assert await write(client, daemon, "hello.txt", b"Rust!!", offset=7) == 200
    assert (daemon.env.root / "hello.txt").read_bytes() == b"Hello, Rust!!"


async def test_write_past_eof_leaves_a_zero_filled_hole(
    client: HttpClient, daemon: RunningDaemon
) -> None:
    assert await write(client, daemon, "sparse", b"end", offset=1000) == 200
    assert (daemon.env.root / "sparse").read_bytes() == b"\0" * 1000 + b"end"


async def test_write_with_matching_sha1_succeeds(client: HttpClient, daemon: RunningDaemon) -> None:
    body = b"piece data"
    headers = path_headers(daemon, "p", X_Expected_SHA1=hashlib.sha1(body).hexdigest())
    assert (await client.request("POST", f"/write/{ROOT_KEY}", headers, body)).status == 200
    assert (daemon.env.root / "p").read_bytes() == body


async def test_write_with_wrong_sha1_is_409_and_writes_nothing(
    client: HttpClient, daemon: RunningDaemon
) -> None:
    body = b"piece data"
    good = hashlib.sha1(body).hexdigest()
    for expected in ("0" * 40, good.upper()):
        headers = path_headers(daemon, "dir/p", X_Expected_SHA1=expected)
        reply = await client.request("POST", f"/write/{ROOT_KEY}", headers, body)
        assert reply.status == 409
        assert reply.text == f"Hash mismatch: expected {expected}, got {good}"
    assert not (daemon.env.root / "dir").exists()


async def test_bodies_up_to_64_mib_are_written(client: HttpClient, daemon: RunningDaemon) -> None:
    body = os.urandom(16 * MIB)
    assert await write(client, daemon, "big", body) == 200
    assert (
        hashlib.sha256((daemon.env.root / "big").read_bytes()).digest()
        == hashlib.sha256(body).digest()
    )


async def test_body_over_64_mib_is_413_before_anything_is_read(daemon: RunningDaemon) -> None:
    request = (
        f"POST /write/{ROOT_KEY} HTTP/1.1\r\nHost: 127.0.0.1:{daemon.port}\r\n"
        f"X-JST-Auth: {daemon.env.token}\r\n"
        f"X-Path-Base64: {b64('too-big')}\r\nContent-Length: {64 * MIB + 1}\r\n\r\n"
    ).encode()
    reply = await raw_exchange(daemon.port, request)
    assert reply.startswith(b"HTTP/1.1 413 ")
    assert not (daemon.env.root / "too-big").exists()


async def test_write_header_errors_are_400_with_the_original_messages(
    client: HttpClient, daemon: RunningDaemon
) -> None:
    target = f"/write/{ROOT_KEY}"
    cases: list[tuple[list[tuple[str | bytes, str | bytes]], str]] = [
        ([], "Missing X-Path-Base64 header"),
        ([("X-Path-Base64", b"\xff\xfe")], "Invalid X-Path-Base64 header"),
        ([("X-Path-Base64", "not base64!")], "Invalid base64 in X-Path-Base64"),
        ([("X-Path-Base64", "YQ")], "Invalid base64 in X-Path-Base64"),  # padding required
        ([("X-Path-Base64", "YR==")], "Invalid base64 in X-Path-Base64"),  # non-canonical
        ([("X-Path-Base64", b64(b"caf\xe9"))], "Invalid UTF-8 in path"),  # btoa('café')
        ([("X-Path-Base64", b64("f")), ("X-Offset", "-1")], "Invalid X-Offset value"),
        ([("X-Path-Base64", b64("f")), ("X-Offset", "1_0")], "Invalid X-Offset value"),
        (
            [("X-Path-Base64", b64("f")), ("X-Offset", "18446744073709551616")],
            "Invalid X-Offset value",
        ),
        ([("X-Path-Base64", b64("f")), ("X-Offset", b"\xb9")], "Invalid X-Offset header"),
        (
            [("X-Path-Base64", b64("f")), ("X-Expected-SHA1", b"\xff")],
            "Invalid X-Expected-SHA1 header",
        ),
    ]
    for headers, message in cases:
        reply = await client.request("POST", target, [*daemon.auth, *headers], b"data")
        assert (reply.status, reply.text) == (400, message), headers
    assert os.listdir(daemon.env.root) == []


async def test_unknown_root_is_403_and_dotdot_is_400(
    client: HttpClient, daemon: RunningDaemon
) -> None:
    reply = await client.request("POST", "/write/ffffffffffffffff", path_headers(daemon, "f"), b"x")
    assert (reply.status, reply.text) == (403, "Invalid root key")
    for rel in ("../../../etc/passwd", "a/../../b", "..", "a\\..\\b"):
        reply = await client.request("POST", f"/write/{ROOT_KEY}", path_headers(daemon, rel), b"x")
        assert (reply.status, reply.text) == (400, "Invalid path"), rel


async def test_names_containing_dots_are_legal(client: HttpClient, daemon: RunningDaemon) -> None:
    assert await write(client, daemon, "a..b.txt", b"1") == 200
    assert await write(client, daemon, "...", b"2") == 200
    assert (daemon.env.root / "a..b.txt").read_bytes() == b"1"


async def test_absolute_drive_unc_and_nul_paths_are_refused(
    client: HttpClient, daemon: RunningDaemon, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.txt"
    for rel in (str(outside), "C:/x", "c:x", "\\\\server\\share\\x", "//server/x", "a\0b"):
        reply = await client.request("POST", f"/write/{ROOT_KEY}", path_headers(daemon, rel), b"x")
        assert (reply.status, reply.text) == (400, "Invalid path"), rel
    assert not outside.exists()
    assert os.listdir(daemon.env.root) == []


async def test_symlinks_that_leave_the_root_are_refused(
    client: HttpClient, daemon: RunningDaemon, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    (daemon.env.root / "escape").symlink_to(outside)
    (daemon.env.root / "dangling").symlink_to(outside / "new-file")
    (daemon.env.root / "inside").symlink_to(daemon.env.root)
    assert (await write(client, daemon, "escape/secret", b"overwritten")) == 400
    assert (await write(client, daemon, "dangling", b"created")) == 400
    reply = await client.request("GET", f"/read/{ROOT_KEY}", path_headers(daemon, "escape/secret"))
    assert reply.status == 400
    assert (outside / "secret").read_bytes() == b"secret"
    assert not (outside / "new-file").exists()
    # A symlink that stays inside the root is followed.
    assert (await write(client, daemon, "inside/ok", b"fine")) == 200
    assert (daemon.env.root / "ok").read_bytes() == b"fine"


async def test_read_exact_range_and_to_eof(client: HttpClient, daemon: RunningDaemon) -> None:
    (daemon.env.root / "f").write_bytes(b"0123456789")
    target = f"/read/{ROOT_KEY}"
    reply = await client.request(
        "GET", target, path_headers(daemon, "f", X_Offset="2", X_Length="3")
    )
    assert (reply.status, reply.body) == (200, b"234")
    assert reply.header("content-type") == "application/octet-stream"
    assert (
        await client.request("GET", target, path_headers(daemon, "f", X_Offset="4"))
    ).body == b"456789"
    assert (await client.request("GET", target, path_headers(daemon, "f"))).body == b"0123456789"
    assert (
        await client.request("GET", target, path_headers(daemon, "f", X_Offset="50"))
    ).body == b""
    zero = await client.request(
        "GET", target, path_headers(daemon, "f", X_Offset="50", X_Length="0")
    )
    assert (zero.status, zero.body) == (200, b"")


async def test_read_past_eof_with_x_length_is_500_never_short(
    client: HttpClient, daemon: RunningDaemon
) -> None:
    (daemon.env.root / "f").write_bytes(b"0123456789")
    reply = await client.request(
        "GET", f"/read/{ROOT_KEY}", path_headers(daemon, "f", X_Offset="8", X_Length="3")
    )
    assert reply.status == 500


async def test_read_of_missing_file_is_404(client: HttpClient, daemon: RunningDaemon) -> None:
    reply = await client.request("GET", f"/read/{ROOT_KEY}", path_headers(daemon, "missing/file"))
    assert reply.status == 404


async def test_huge_x_length_is_refused_before_any_allocation(
    client: HttpClient, daemon: RunningDaemon
) -> None:
    (daemon.env.root / "f").write_bytes(b"x")
    for length in (str(64 * MIB + 1), "18446744073709551615"):
        reply = await client.request(
            "GET", f"/read/{ROOT_KEY}", path_headers(daemon, "f", X_Length=length)
        )
        assert reply.status == 400
    reply = await client.request(
        "GET", f"/read/{ROOT_KEY}", path_headers(daemon, "f", X_Length="x")
    )
    assert (reply.status, reply.text) == (400, "Invalid X-Length value")
    assert (await client.request("GET", "/health")).status == 200


async def test_read_to_eof_of_more_than_64_mib_is_refused(
    client: HttpClient, daemon: RunningDaemon
) -> None:
    (daemon.env.root / "huge").touch()
    os.truncate(daemon.env.root / "huge", 65 * MIB)  # sparse: no real disk use
    reply = await client.request("GET", f"/read/{ROOT_KEY}", path_headers(daemon, "huge"))
    assert reply.status == 400
    tail = await client.request(
        "GET", f"/read/{ROOT_KEY}", path_headers(daemon, "huge", X_Offset=str(64 * MIB))
    )
    assert (tail.status, len(tail.body)) == (200, MIB)


async def test_offset_beyond_the_os_range_is_a_500_not_a_crash(
    client: HttpClient, daemon: RunningDaemon
) -> None:
    (daemon.env.root / "f").write_bytes(b"x")
    huge = str(2**64 - 1)
    assert (
        await client.request("GET", f"/read/{ROOT_KEY}", path_headers(daemon, "f", X_Offset=huge))
    ).status == 500
    assert (await write(client, daemon, "f", b"y", offset=2**64 - 1)) == 500
    assert (await client.request("GET", "/health")).status == 200


async def test_missing_root_folder_is_a_clear_404_and_is_not_recreated(
    client: HttpClient, daemon: RunningDaemon
) -> None:
    daemon.env.root.rmdir()  # the drive was unplugged
    reply = await client.request("POST", f"/write/{ROOT_KEY}", path_headers(daemon, "a/b"), b"x")
    assert reply.status == 404
    assert "Download root folder is not available" in reply.text
    assert not daemon.env.root.exists()
    stat = await client.request("GET", f"/ops/stat?path=a&root_key={ROOT_KEY}", daemon.auth)
    assert stat.status == 404


# --- /files/ensure_dir and /ops/* ------------------------------------------------------


async def test_ensure_dir_is_mkdir_p_and_idempotent(
    client: HttpClient, daemon: RunningDaemon
) -> None:
    body = json.dumps({"path": "a/b/c", "root_key": ROOT_KEY}).encode()
    for _ in range(2):
        reply = await client.request("POST", "/files/ensure_dir", json_headers(daemon), body)
        assert (reply.status, reply.body) == (200, b"")
    assert (daemon.env.root / "a" / "b" / "c").is_dir()


async def test_ensure_dir_with_empty_path_creates_the_root(
    client: HttpClient, daemon: RunningDaemon
) -> None:
    daemon.env.root.rmdir()
    body = json.dumps({"path": "", "root_key": ROOT_KEY}).encode()
    assert (
        await client.request("POST", "/files/ensure_dir", json_headers(daemon), body)
    ).status == 200
    assert daemon.env.root.is_dir()


async def test_json_routes_check_content_type_syntax_and_fields(
    client: HttpClient, daemon: RunningDaemon
) -> None:
    good = json.dumps({"path": "x", "root_key": ROOT_KEY}).encode()
    no_type = await client.request("POST", "/files/ensure_dir", daemon.auth, good)
    assert no_type.status == 415
    wrong_type = await client.request(
        "POST", "/ops/delete", [*daemon.auth, ("Content-Type", "text/plain")], good
    )
    assert wrong_type.status == 415
    for bad in (b"{", b"{'path': 1}", b'{"path": NaN, "root_key": "k"}', b"\xff"):
        assert (
            await client.request("POST", "/ops/delete", json_headers(daemon), bad)
        ).status == 400, bad
    wrong_shapes: list[object] = [
        {"root_key": ROOT_KEY},
        {"path": 1, "root_key": ROOT_KEY},
        [],
        {"path": "x"},
    ]
    for body in wrong_shapes:
        reply = await client.request(
            "POST", "/ops/delete", json_headers(daemon), json.dumps(body).encode()
        )
        assert reply.status == 422, body
    truncate = {"path": "x", "root_key": ROOT_KEY, "length": True}
    reply = await client.request(
        "POST", "/ops/truncate", json_headers(daemon), json.dumps(truncate).encode()
    )
    assert reply.status == 422
    charset = [*daemon.auth, ("Content-Type", "application/json; charset=utf-8")]
    assert (await client.request("POST", "/files/ensure_dir", charset, good)).status == 200


async def test_stat_reports_size_mtime_ms_and_kind(
    client: HttpClient, daemon: RunningDaemon
) -> None:
    path = daemon.env.root / "f.txt"
    path.write_bytes(b"hello world")
    os.utime(path, ns=(1_735_000_000_123_456_789, 1_735_000_000_123_456_789))
    reply = await client.request("GET", f"/ops/stat?path=f.txt&root_key={ROOT_KEY}", daemon.auth)
    assert reply.status == 200
    assert reply.body == b'{"size":11,"mtime":1735000000123,"is_directory":false,"is_file":true}'
    folder = await client.request("GET", f"/ops/stat?path=&root_key={ROOT_KEY}", daemon.auth)
    assert folder.json()["is_directory"] is True
    missing = await client.request("GET", f"/ops/stat?path=nope&root_key={ROOT_KEY}", daemon.auth)
    assert missing.status == 404
    no_key = await client.request("GET", "/ops/stat?path=f.txt", daemon.auth)
    assert no_key.status == 400
    assert no_key.text == "Failed to deserialize query string: missing field `root_key`"


async def test_list_names_entries_and_errors_are_500(
    client: HttpClient, daemon: RunningDaemon
) -> None:
    (daemon.env.root / "sub").mkdir()
    (daemon.env.root / "test.txt").write_bytes(b"")
    reply = await client.request("GET", f"/ops/list?path=&root_key={ROOT_KEY}", daemon.auth)
    assert sorted(reply.json()) == ["sub", "test.txt"]
    for rel in ("missing", "test.txt"):
        reply = await client.request(
            "GET", f"/ops/list?path={rel}&root_key={ROOT_KEY}", daemon.auth
        )
        assert reply.status == 500, rel


async def test_delete_file_and_tree_but_never_the_root(
    client: HttpClient, daemon: RunningDaemon, tmp_path: Path
) -> None:
    root = daemon.env.root
    (root / "tree" / "deep").mkdir(parents=True)
    (root / "tree" / "deep" / "f").write_bytes(b"x")
    (root / "file").write_bytes(b"x")
    outside = tmp_path / "keep-me"
    outside.mkdir()
    (outside / "f").write_bytes(b"x")
    (root / "link").symlink_to(outside)

    async def delete(rel: str) -> int:
        body = json.dumps({"path": rel, "root_key": ROOT_KEY}).encode()
        return (await client.request("POST", "/ops/delete", json_headers(daemon), body)).status

    assert await delete("tree") == 200
    assert await delete("file") == 200
    assert await delete("link") == 200  # the link goes, what it points at stays
    assert (outside / "f").exists()
    assert await delete("file") == 500  # already gone
    assert await delete("") == 400
    assert await delete("/") == 400
    assert root.is_dir()
    assert os.listdir(root) == []


async def test_truncate_shrinks_and_extends_but_does_not_create(
    client: HttpClient, daemon: RunningDaemon
) -> None:
    path = daemon.env.root / "f"
    path.write_bytes(b"0123456789")

    async def truncate(rel: str, length: int) -> int:
        body: bytes = json.dumps({"path": rel, "root_key": ROOT_KEY, "length": length}).encode()
        return (await client.request("POST", "/ops/truncate", json_headers(daemon), body)).status

    assert await truncate("f", 4) == 200
    assert path.read_bytes() == b"0123"
    assert await truncate("f", 6) == 200
    assert path.read_bytes() == b"0123\0\0"
    assert await truncate("new", 5) == 500
    assert not (daemon.env.root / "new").exists()


# --- hashing ---------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["sha1", "sha256"])
async def test_hash_of_body_is_the_raw_digest(
    client: HttpClient, daemon: RunningDaemon, algorithm: str
) -> None:
    for body in (b"", b"abc", os.urandom(3 * MIB)):
        reply = await client.request("POST", f"/hash/{algorithm}", daemon.auth, body)
        assert reply.status == 200
        assert reply.header("content-type") == "application/octet-stream"
        assert reply.body == hashlib.new(algorithm, body).digest()


@pytest.mark.parametrize("algorithm", ["sha1", "sha256"])
async def test_hash_of_file_range_is_hex(
    client: HttpClient, daemon: RunningDaemon, algorithm: str
) -> None:
    data = os.urandom(2 * MIB + 7)
    (daemon.env.root / "my dir").mkdir()
    (daemon.env.root / "my dir" / "f").write_bytes(data)
    base = f"/hash/{algorithm}/my%20dir/f?root_token={ROOT_KEY}"
    whole = await client.request("GET", base, daemon.auth)
    assert (whole.status, whole.text) == (200, hashlib.new(algorithm, data).hexdigest())
    part = await client.request("GET", base + "&offset=100&length=1000", daemon.auth)
    assert part.text == hashlib.new(algorithm, data[100:1100]).hexdigest()
    short = await client.request("GET", base + f"&offset={len(data) - 5}&length=1000", daemon.auth)
    assert short.text == hashlib.new(algorithm, data[-5:]).hexdigest()
    missing = await client.request(
        "GET", f"/hash/{algorithm}/nope?root_token={ROOT_KEY}", daemon.auth
    )
    assert missing.status == 404
    no_token = await client.request("GET", f"/hash/{algorithm}/my%20dir/f", daemon.auth)
    assert no_token.status == 400


# --- legacy /files routes --------------------------------------------------------------


async def test_legacy_files_routes_write_and_read(
    client: HttpClient, daemon: RunningDaemon
) -> None:
    reply = await client.request(
        "POST", f"/files/dir/leg%20acy.bin?root_key={ROOT_KEY}", daemon.auth, b"abcdef"
    )
    assert reply.status == 200
    assert (daemon.env.root / "dir" / "leg acy.bin").read_bytes() == b"abcdef"
    reply = await client.request(
        "POST", f"/files/dir/leg%20acy.bin?root_key={ROOT_KEY}&offset=2", daemon.auth, b"ZZ"
    )
    assert (daemon.env.root / "dir" / "leg acy.bin").read_bytes() == b"abZZef"
    read = await client.request(
        "GET", f"/files/dir/leg%20acy.bin?root_key={ROOT_KEY}&offset=1&length=3", daemon.auth
    )
    assert (read.status, read.body) == (200, b"bZZ")
    assert (
        await client.request("GET", f"/files/nope?root_key={ROOT_KEY}", daemon.auth)
    ).status == 404
    short = await client.request(
        "GET", f"/files/dir/leg%20acy.bin?root_key={ROOT_KEY}&offset=5&length=9", daemon.auth
    )
    assert short.status == 500
    assert (
        await client.request("GET", f"/files/..%2Fx?root_key={ROOT_KEY}", daemon.auth)
    ).status == 400


# --- misc routes -----------------------------------------------------------------------


async def test_stats_has_every_counter_in_order(client: HttpClient, daemon: RunningDaemon) -> None:
    reply = await client.request("GET", "/stats", daemon.auth)
    keys = list(reply.json())
    assert keys == [
        "tcp_sockets", "pending_connects", "pending_tcp", "udp_sockets", "tcp_servers",
        "ws_connections", "bytes_sent", "bytes_received", "uptime_secs",
    ]  # fmt: skip
    assert all(isinstance(v, int) for v in reply.json().values())


async def test_network_interfaces_lists_loopback_ipv4(
    client: HttpClient, daemon: RunningDaemon
) -> None:
    reply = await client.request("GET", "/network/interfaces", daemon.auth)
    entries = reply.json()
    assert {"name": "lo", "address": "127.0.0.1", "prefixLength": 8} in entries
    assert all(":" not in e["address"] for e in entries)


async def test_reload_picks_up_new_roots_and_keeps_old_ones_on_failure(
    client: HttpClient, daemon: RunningDaemon, tmp_path: Path
) -> None:
    second = tmp_path / "second"
    second.mkdir()
    daemon.env.write_rpc_info({ROOT_KEY: daemon.env.root, "aaaaaaaaaaaaaaaa": second})
    reply = await client.request(
        "POST", "/api/read-rpc-info-from-disk", [("Authorization", f"Bearer {daemon.env.token}")]
    )
    assert (reply.status, reply.body) == (200, b"{}")
    written = await client.request(
        "POST", "/write/aaaaaaaaaaaaaaaa", path_headers(daemon, "f"), b"x"
    )
    assert written.status == 200
    daemon.env.rpc_info.write_text("{ not json")
    failed = await client.request("POST", "/api/read-rpc-info-from-disk", daemon.auth)
    assert (failed.status, failed.body) == (500, b"")
    still = await client.request("POST", "/write/aaaaaaaaaaaaaaaa", path_headers(daemon, "g"), b"x")
    assert still.status == 200


async def test_head_on_a_get_route_has_headers_but_no_body(client: HttpClient) -> None:
    reply = await client.request("HEAD", "/health")
    assert (reply.status, reply.body) == (200, b"")
    assert reply.header("content-length") == "2"


async def test_malformed_http_does_not_hurt_the_daemon(daemon: RunningDaemon) -> None:
    for garbage in (
        b"\x00\x01\x02\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /health HTTP/1.1\r\nBad Header\r\n\r\n",
    ):
        reply = await raw_exchange(daemon.port, garbage, quiet_after=2)
        assert not reply or reply.startswith(b"HTTP/1.1 4")
    async with HttpClient(daemon.port) as fresh:
        assert (await fresh.request("GET", "/health")).status == 200


async def test_keep_alive_serves_many_requests_on_one_connection(
    client: HttpClient, daemon: RunningDaemon
) -> None:
    for i in range(50):
        assert await write(client, daemon, "k", b"x", offset=i) == 200
    assert (daemon.env.root / "k").read_bytes() == b"x" * 50


async def test_large_bodies_in_a_row_on_one_connection_stay_distinct(
    client: HttpClient, daemon: RunningDaemon
) -> None:
    """Bodies of one size, back to back (the daemon reuses the buffer between them)."""
    size = 512 * 1024
    bodies = [bytes([65 + i]) * (size - 1) + b"\n" for i in range(3)]
    for i, body in enumerate(bodies):
        assert await write(client, daemon, f"piece{i}", body) == 200
        reply = await client.request("POST", "/hash/sha1", daemon.auth, body)
        assert reply.body == hashlib.sha1(body).digest()
    for i, body in enumerate(bodies):
        assert (daemon.env.root / f"piece{i}").read_bytes() == body


async def test_a_json_body_nested_too_deeply_is_400_not_a_500(
    client: HttpClient, daemon: RunningDaemon
) -> None:
    """json.loads raises RecursionError (not a ValueError) on deep nesting."""
    body = b"[" * 200_000 + b"]" * 200_000
    for route in ("/ops/delete", "/files/ensure_dir"):
        reply = await client.request("POST", route, json_headers(daemon), body)
        assert reply.status == 400, (route, reply.status)
        assert reply.body.startswith(b"Failed to parse the request body as JSON")
