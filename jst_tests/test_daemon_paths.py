"""Path safety against a real daemon (issue 12 items 3, 7, 12): symlinks, special files,
absurd paths, root folders that go away and come back."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import pytest
import trio

from jst_tests.daemonproc import ROOT_KEY, RunningDaemon, b64
from jst_tests.httpclient import HttpClient, Reply

# Every file route that would open the file, as (method, target, headers, body) builders.
Route = tuple[str, str, list[tuple[str | bytes, str | bytes]], bytes]


def json_headers(daemon: RunningDaemon) -> list[tuple[str | bytes, str | bytes]]:
    return [*daemon.auth, ("Content-Type", "application/json")]


def file_routes(daemon: RunningDaemon, rel: str) -> dict[str, Route]:
    path_h: list[tuple[str | bytes, str | bytes]] = [*daemon.auth, ("X-Path-Base64", b64(rel))]
    ops = json.dumps({"path": rel, "root_key": ROOT_KEY, "length": 0}).encode()
    return {
        "read": ("GET", f"/read/{ROOT_KEY}", path_h, b""),
        "read-exact": ("GET", f"/read/{ROOT_KEY}", [*path_h, ("X-Length", "4")], b""),
        "write": ("POST", f"/write/{ROOT_KEY}", path_h, b"data"),
        "hash": ("GET", f"/hash/sha1/{rel}?root_token={ROOT_KEY}", daemon.auth, b""),
        "legacy-read": ("GET", f"/files/{rel}?root_key={ROOT_KEY}", daemon.auth, b""),
        "legacy-write": ("POST", f"/files/{rel}?root_key={ROOT_KEY}", daemon.auth, b"data"),
        "truncate": ("POST", "/ops/truncate", json_headers(daemon), ops),
    }


async def call(client: HttpClient, route: Route) -> Reply:
    method, target, headers, body = route
    with trio.fail_after(5):  # a blocked worker thread would hang here (issue 12 item 7)
        return await client.request(method, target, headers, body)


async def test_a_fifo_in_a_root_is_refused_by_every_file_route_without_blocking(
    client: HttpClient, daemon: RunningDaemon
) -> None:
    fifo = daemon.env.root / "pipe"
    os.mkfifo(fifo)
    for name, route in file_routes(daemon, "pipe").items():
        reply = await call(client, route)
        assert (reply.status, reply.text) == (400, "Not a regular file"), name
    # Routes that do not open it still work: stat says what it is, delete removes it.
    reply = await client.request("GET", f"/ops/stat?path=pipe&root_key={ROOT_KEY}", daemon.auth)
    assert reply.json()["is_file"] is False
    listing = await client.request("GET", f"/ops/list?path=pipe&root_key={ROOT_KEY}", daemon.auth)
    assert listing.status == 500  # not a folder (§5.8.5)
    body = json.dumps({"path": "pipe", "root_key": ROOT_KEY}).encode()
    assert (await client.request("POST", "/ops/delete", json_headers(daemon), body)).status == 200
    assert not os.path.lexists(fifo)
    assert (await client.request("GET", "/health")).status == 200


async def test_a_socket_and_a_device_in_a_root_are_refused(
    client: HttpClient, daemon: RunningDaemon
) -> None:
    listener = socket.socket(socket.AF_UNIX)
    try:
        listener.bind(str(daemon.env.root / "sock"))
        names = ["sock"]
        try:  # the same device as /dev/null; needs CAP_MKNOD (tests run as root here)
            os.mknod(daemon.env.root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
            names.append("null")
        except PermissionError:
            pass
        for rel in names:
            for name, route in file_routes(daemon, rel).items():
                reply = await call(client, route)
                assert (reply.status, reply.text) == (400, "Not a regular file"), (rel, name)
    finally:
        listener.close()
    if "null" not in names:
        pytest.skip("mknod not permitted here: only the socket was checked")


async def test_a_folder_where_a_file_is_wanted_keeps_the_original_answers(
    client: HttpClient, daemon: RunningDaemon
) -> None:
    (daemon.env.root / "dir").mkdir()
    routes = file_routes(daemon, "dir")
    assert (await call(client, routes["read"])).status == 500  # read fails: EISDIR
    assert (await call(client, routes["write"])).status == 500  # open fails: EISDIR
    assert (await call(client, routes["truncate"])).status == 500


async def test_absurdly_deep_or_long_paths_are_400_and_create_nothing(
    client: HttpClient, daemon: RunningDaemon
) -> None:
    deep = "/".join(["a"] * 2000) + "/f"
    long_name = "n" * 300
    (daemon.env.root / "sub").mkdir()
    for rel in (deep, long_name, f"sub/{long_name}/f"):
        for name, route in file_routes(daemon, rel).items():
            reply = await call(client, route)
            assert (reply.status, reply.text) == (400, "Invalid path"), (rel[:20], name)
        body = json.dumps({"path": rel, "root_key": ROOT_KEY}).encode()
        reply = await client.request("POST", "/files/ensure_dir", json_headers(daemon), body)
        assert reply.status == 400
    assert os.listdir(daemon.env.root) == ["sub"]
    assert os.listdir(daemon.env.root / "sub") == []


async def test_symlinks_inside_the_root_are_followed_however_they_are_spelled(
    client: HttpClient, daemon: RunningDaemon, tmp_path: Path
) -> None:
    root = daemon.env.root
    (root / "data" / "deep").mkdir(parents=True)
    (root / "data" / "deep" / "f").write_bytes(b"inside")
    (root / "rel").symlink_to("data/deep")  # relative
    (root / "data" / "up").symlink_to("../data/deep")  # relative through ..
    (root / "abs").symlink_to(root / "data" / "deep")  # absolute, inside
    alias = tmp_path / "alias"  # the root reached through a link outside it
    alias.symlink_to(root)
    (root / "via-alias").symlink_to(alias / "data" / "deep")
    (root / "file-link").symlink_to("data/deep/f")
    for rel in ("rel/f", "data/up/f", "abs/f", "via-alias/f", "file-link"):
        routes = file_routes(daemon, rel)
        reply = await call(client, routes["read"])
        assert (reply.status, reply.body) == (200, b"inside"), rel
        stat_reply = await client.request(
            "GET", f"/ops/stat?path={rel}&root_key={ROOT_KEY}", daemon.auth
        )
        assert stat_reply.json()["is_file"] is True, rel
    listing = await client.request("GET", f"/ops/list?path=abs&root_key={ROOT_KEY}", daemon.auth)
    assert listing.json() == ["f"]
    # A new file through a link is created at the link's target.
    assert (await call(client, file_routes(daemon, "abs/new")["write"])).status == 200
    assert (root / "data" / "deep" / "new").read_bytes() == b"data"


async def test_every_route_refuses_a_symlink_out_of_the_root(
    client: HttpClient, daemon: RunningDaemon, tmp_path: Path
) -> None:
    root = daemon.env.root
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "secret").write_bytes(b"secret")
    (root / "abs").symlink_to(outside)
    (root / "rel").symlink_to("../outside")
    (root / "dotdot").symlink_to("..")
    (root / "to-dev").symlink_to("/dev/zero")
    (root / "loop").symlink_to("loop")
    for rel in ("abs/secret", "rel/secret", "dotdot/outside/secret", "to-dev"):
        for name, route in file_routes(daemon, rel).items():
            reply = await call(client, route)
            assert reply.status == 400, (rel, name)
        for op in ("stat", "list"):
            reply = await client.request(
                "GET", f"/ops/{op}?path={rel}&root_key={ROOT_KEY}", daemon.auth
            )
            assert reply.status == 400, (rel, op)
    for rel in ("abs/sub", "rel/secret", "abs/new/deeper"):
        body = json.dumps({"path": rel, "root_key": ROOT_KEY}).encode()
        for endpoint in ("/ops/delete", "/files/ensure_dir"):
            reply = await client.request("POST", endpoint, json_headers(daemon), body)
            assert reply.status == 400, (rel, endpoint)
    # A symlink loop is an ordinary failure of the step (read: 404), not a hang or a crash.
    assert (await call(client, file_routes(daemon, "loop")["read"])).status == 404
    assert sorted(os.listdir(outside)) == ["secret", "sub"]
    assert (outside / "secret").read_bytes() == b"secret"


async def test_delete_of_a_tree_never_follows_its_symlinks_out(
    client: HttpClient, daemon: RunningDaemon, tmp_path: Path
) -> None:
    root = daemon.env.root
    outside = tmp_path / "outside"
    (outside / "keep").mkdir(parents=True)
    (outside / "keep" / "f").write_bytes(b"x")
    (root / "tree" / "sub").mkdir(parents=True)
    (root / "tree" / "sub" / "out").symlink_to(outside)
    (root / "tree" / "sub" / "out-file").symlink_to(outside / "keep" / "f")
    body = json.dumps({"path": "tree", "root_key": ROOT_KEY}).encode()
    assert (await client.request("POST", "/ops/delete", json_headers(daemon), body)).status == 200
    assert not (root / "tree").exists()
    assert (outside / "keep" / "f").read_bytes() == b"x"


async def test_a_root_folder_that_goes_and_comes_back(
    client: HttpClient, daemon: RunningDaemon, tmp_path: Path
) -> None:
    root = daemon.env.root
    (root / "f").write_bytes(b"first")
    assert (await call(client, file_routes(daemon, "f")["read"])).body == b"first"
    root.rename(tmp_path / "unplugged")  # the drive goes away
    for name, route in file_routes(daemon, "f").items():
        reply = await call(client, route)
        assert reply.status == 404, name
        assert reply.text == f"Download root folder is not available: {root}", name
    root.mkdir()  # another drive at the same place
    assert (await call(client, file_routes(daemon, "g")["write"])).status == 200
    assert (root / "g").read_bytes() == b"data"
    assert not (tmp_path / "unplugged" / "g").exists()
    assert (await call(client, file_routes(daemon, "f")["read"])).status == 404
