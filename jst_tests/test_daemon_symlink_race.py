"""Issue 12 item 3: a process swapping a folder for a symlink out of the root, as fast as
it can, while a client hammers every file route, never makes the daemon touch, read or
reveal anything outside the root.

The racer is a separate process that exchanges ``victim`` (a real folder) and ``swap`` (a
symlink to the sentinel tree outside) atomically with ``renameat2(RENAME_EXCHANGE)``, or
with rename/symlink steps where that call is missing, for at most ``RACE_SECONDS``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import pytest
import trio

from jst_tests.daemonproc import ROOT_KEY, RunningDaemon, b64
from jst_tests.httpclient import HttpClient

RACE_SECONDS = 20.0
SECRET = b"OUTSIDE-SECRET"
SECRET_SIZE = 7777  # no file inside the root ever has this size
OUTSIDE_ONLY = "outside-only-name"

RACER = r"""
import ctypes, errno, os, sys, time
root, outside, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
libc = ctypes.CDLL(None, use_errno=True)
RENAME_EXCHANGE = 2
fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
def exchange():
    if libc.renameat2(fd, b"victim", fd, b"swap", RENAME_EXCHANGE) != 0:
        raise OSError(ctypes.get_errno(), "renameat2")
def steps():
    os.rename("victim", "held"); os.rename("swap", "victim"); os.rename("held", "swap")
os.chdir(root)
swap = exchange if hasattr(libc, "renameat2") else steps
swaps = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        swap()
        swaps += 1
    except OSError:
        # The daemon deleted the folder (a legal /ops/delete inside): put both back.
        for name in ("victim", "swap", "held"):
            if os.path.islink(name):
                os.unlink(name)
        if not os.path.isdir("victim"):
            try:
                os.mkdir("victim")
            except OSError:
                pass
        try:
            os.symlink(outside, "swap")
        except OSError:
            pass
print(swaps, flush=True)
"""


def tree_digest(top: Path) -> dict[str, tuple[str, str]]:
    """Every entry below ``top`` (never following symlinks): kind and content hash."""
    found: dict[str, tuple[str, str]] = {}
    for folder, dirs, files in os.walk(top):
        for name in dirs + files:
            path = Path(folder) / name
            rel = str(path.relative_to(top))
            if path.is_symlink():
                found[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                found[rel] = ("dir", "")
            else:
                found[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
    return found


def make_sentinel(outside: Path) -> set[str]:
    """The tree a redirected operation would hit; returns the hex SHA-1 of its files."""
    for rel in ("a", "b/c", "b/d/e", f"b/{OUTSIDE_ONLY}", "new/deep/f"):
        path = outside / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes((SECRET * (SECRET_SIZE // len(SECRET) + 1))[:SECRET_SIZE])
    return {hashlib.sha1(p.read_bytes()).hexdigest() for p in outside.rglob("*") if p.is_file()}


class Hammer:
    """A client on one connection that sends one kind of request until ``deadline``."""

    def __init__(self, daemon: RunningDaemon, outside_sha1: set[str]) -> None:
        self.daemon = daemon
        self.outside_sha1 = outside_sha1
        self.requests = 0
        self.ok = 0

    def headers(self, rel: str) -> list[tuple[str | bytes, str | bytes]]:
        return [*self.daemon.auth, ("X-Path-Base64", b64(rel))]

    async def run(self, kind: str, deadline: float) -> None:
        async with HttpClient(self.daemon.port) as client:
            step = 0
            while time.monotonic() < deadline:
                step += 1
                await self.one(client, kind, step)

    async def one(self, client: HttpClient, kind: str, step: int) -> None:
        rel = ("victim/a", "victim/b/c", "victim/new/deep/f")[step % 3]
        json_headers = [*self.daemon.auth, ("Content-Type", "application/json")]
        with trio.fail_after(10):
            if kind == "write":
                reply = await client.request(
                    "POST", f"/write/{ROOT_KEY}", self.headers(rel), b"INSIDE"
                )
            elif kind == "read":
                reply = await client.request("GET", f"/read/{ROOT_KEY}", self.headers(rel))
                assert SECRET not in reply.body
            elif kind == "hash":
                reply = await client.request(
                    "GET", f"/hash/sha1/{rel}?root_token={ROOT_KEY}", self.daemon.auth
                )
                assert reply.status != 200 or reply.text not in self.outside_sha1
            elif kind == "stat":
                reply = await client.request(
                    "GET", f"/ops/stat?path={rel}&root_key={ROOT_KEY}", self.daemon.auth
                )
                assert reply.status != 200 or reply.json()["size"] != SECRET_SIZE
            elif kind == "list":
                reply = await client.request(
                    "GET", f"/ops/list?path=victim/b&root_key={ROOT_KEY}", self.daemon.auth
                )
                assert reply.status != 200 or OUTSIDE_ONLY not in reply.json()
            else:
                target = {
                    "delete": "victim/b" if step % 2 else "victim/new/deep",
                    "truncate": rel,
                    "ensure_dir": "victim/b/d/made",
                }[kind]
                body = json.dumps({"path": target, "root_key": ROOT_KEY, "length": 1}).encode()
                endpoint = {
                    "delete": "/ops/delete",
                    "truncate": "/ops/truncate",
                    "ensure_dir": "/files/ensure_dir",
                }[kind]
                reply = await client.request("POST", endpoint, json_headers, body)
        assert reply.status in (200, 400, 404, 500), (kind, reply.status, reply.body[:80])
        self.requests += 1
        self.ok += reply.status == 200


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX symlinks and rename semantics")
async def test_swapping_a_folder_for_a_symlink_never_reaches_outside_the_root(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    root = daemon.env.root
    outside = tmp_path / "outside"
    outside_sha1 = make_sentinel(outside)
    before = tree_digest(outside)
    (root / "victim" / "b").mkdir(parents=True)
    (root / "swap").symlink_to(outside)
    hammer = Hammer(daemon, outside_sha1)
    racer_out: list[bytes] = []

    async def race() -> None:
        # trio kills the racer if the test fails or is cancelled first.
        argv = [sys.executable, "-c", RACER, str(root), str(outside), str(RACE_SECONDS)]
        done = await trio.run_process(argv, capture_stdout=True)
        racer_out.append(done.stdout)

    deadline = time.monotonic() + RACE_SECONDS
    with trio.fail_after(RACE_SECONDS + 20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(race)
            for kind in ("write", "read", "hash", "stat", "list", "delete", "truncate"):
                nursery.start_soon(hammer.run, kind, deadline)
            nursery.start_soon(hammer.run, "ensure_dir", deadline)
    swaps = int(racer_out[0])
    print(f"racer swaps: {swaps}; requests: {hammer.requests}, of which 200: {hammer.ok}")
    assert swaps > 1000, "the racer hardly ran: the test proves nothing"
    assert hammer.requests > 200, hammer.requests
    assert hammer.ok > 50, hammer.ok
    assert tree_digest(outside) == before
    assert daemon.proc.poll() is None
