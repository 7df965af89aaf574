"""The native-host killed, interrupted or abandoned at every step: no orphan, no lost root."""

from __future__ import annotations

import json
import signal
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psutil
import pytest

from jst.rpcinfo import parse_rpc_info
from jst_tests.faults.harness import (
    DaemonWatch,
    alive,
    descendants,
    open_fds,
    picker_pid,
    sleeping_picker,
    start_host,
    wait_until,
)
from jst_tests.hostproc import EXTENSION_ID, HostEnv, HostProcess, gone_within, running_host
from jst_tests.test_link_handler import MAGNET, link


def handshake_request(host_env: HostEnv) -> dict[str, str]:
    return {"op": "handshake", "extensionId": EXTENSION_ID, "installId": host_env.install_id}


def assert_all_gone(pids: set[int], within: float) -> None:
    deadline = time.monotonic() + within
    for pid in pids:
        assert gone_within(pid, max(0.05, deadline - time.monotonic())), f"pid {pid} survived"


@contextmanager
def picking_host(host_env: HostEnv) -> Iterator[tuple[HostProcess, int, int]]:
    """A handshaken host with a folder dialog open: (host, daemon pid, dialog pid)."""
    with running_host(host_env, JST_FOLDER_PICKER=sleeping_picker(host_env)) as host:
        host.handshake()
        daemon = host.daemon_pid()
        host.send({"op": "pickDownloadDirectory"})
        yield host, daemon, picker_pid(host_env)


@pytest.mark.parametrize("moment", ["before", "during", "after"])
def test_host_killed_around_the_handshake_leaves_nothing_running(
    host_env: HostEnv, moment: str
) -> None:
    fault = "host.handshake.before-reply" if moment == "during" else None
    host = start_host(host_env, fault)
    try:
        watch = DaemonWatch(host.pid)
        wait_until(lambda: host_env.rpc_info.exists(), 10, "the startup write")
        if moment == "before":
            host.proc.kill()
        elif moment == "during":
            host.send(handshake_request(host_env))  # the host kills itself before replying
        else:
            host.handshake()
            host.proc.kill()
        host.proc.wait(10)
        killed_at = time.monotonic()
        daemons = watch.stop()
        if moment != "before":
            assert daemons, "the handshake should have started a daemon"
        assert_all_gone(daemons, 1.0 - (time.monotonic() - killed_at) + 0.1)
        parse_rpc_info(host_env.rpc_info.read_bytes())  # whole and valid
    finally:
        host.cleanup()
    with running_host(host_env) as again:  # and the next host starts normally
        assert again.handshake()["ok"]


def test_host_killed_during_a_folder_pick_takes_the_dialog_along(host_env: HostEnv) -> None:
    with picking_host(host_env) as (host, daemon, picker):
        host.proc.kill()
        host.proc.wait()
        assert gone_within(daemon, 1.0)
        assert gone_within(picker, 2.0), "the folder dialog outlived the host"


STEPS = ["rpcinfo.after-temp-write", "rpcinfo.before-rename", "rpcinfo.after-rename"]


@pytest.mark.parametrize("step", STEPS)
def test_host_killed_inside_an_rpc_info_update_loses_nothing(host_env: HostEnv, step: str) -> None:
    old_root = host_env.base / "Old"
    new_root = host_env.base / "New"
    old_root.mkdir()
    new_root.mkdir()
    with running_host(host_env) as first:
        first.handshake()
        host_env.picker_answer.write_text(str(old_root))
        assert first.request({"op": "pickDownloadDirectory"})["ok"]
    before = host_env.rpc_info.read_bytes()
    # Writes: startup (1), handshake (2), then the pick (3) dies at ``step``. (The
    # startup write is skipped when the handshake is already waiting: wait for it.)
    host = start_host(host_env, f"{step}@3")
    try:
        host_env.wait_for_profile(host.pid)
        host.handshake()
        daemon = host.daemon_pid()
        host_env.picker_answer.write_text(str(new_root))
        host.send({"op": "pickDownloadDirectory"})
        host.proc.wait(10)
        assert host.proc.returncode == -signal.SIGKILL
        assert gone_within(daemon, 1.0)
    finally:
        host.cleanup()
    info = parse_rpc_info(host_env.rpc_info.read_bytes())  # old or new, never partial
    [profile] = [p for p in info.profiles if p.install_id == host_env.install_id]
    paths = [r.path for r in profile.download_roots]
    expected_new = step == "rpcinfo.after-rename"
    assert paths == ([str(old_root), str(new_root)] if expected_new else [str(old_root)])
    if not expected_new:
        assert json.loads(host_env.rpc_info.read_bytes())["profiles"] != []
        assert len(host_env.rpc_info.read_bytes()) >= len(before) - 200  # the old version
    with running_host(host_env) as again:  # the lock died with the host: updates go on
        roots = again.handshake()["payload"]["roots"]
        assert str(old_root) in [r["path"] for r in roots]


def test_stdin_eof_with_a_request_in_flight(host_env: HostEnv) -> None:
    with picking_host(host_env) as (host, daemon, picker):
        host.close_stdin()
        assert host.proc.wait(2) == 0
        assert gone_within(daemon, 1.0)
        assert gone_within(picker, 2.0)


@pytest.mark.parametrize(
    "garbage",
    [struct.pack("<I", 50) + b'{"op":"hand', struct.pack("<I", 64 * 1024 * 1024), b"\x01\x00"],
    ids=["half-frame", "over-the-cap", "half-length"],
)
def test_broken_stream_from_the_browser_ends_host_and_daemon(
    host_env: HostEnv, garbage: bytes
) -> None:
    with running_host(host_env) as host:
        host.handshake()
        daemon = host.daemon_pid()
        host.send_raw(garbage)
        host.close_stdin()
        assert host.proc.wait(2) == 0
        assert gone_within(daemon, 1.0)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signals_end_host_daemon_and_dialog_within_two_seconds(
    host_env: HostEnv, signum: int
) -> None:
    with picking_host(host_env) as (host, daemon, picker):
        started = time.monotonic()
        host.proc.send_signal(signum)
        assert host.proc.wait(2) == 0
        for pid in (daemon, picker):
            assert gone_within(pid, 2.0 - (time.monotonic() - started))
        assert not alive(picker)


@pytest.mark.parametrize(
    "content",
    [b'{"version":1,"profiles":[{"pid":', b"\x00\xffnot json", b'{"version":"1","profiles":7}',
     b'{"version":1,"profiles":[' + b'{"pid":1},' * 2_000_000 + b'{"pid":1}]}'],
    ids=["truncated", "not-json", "wrong-types", "huge"],
)  # fmt: skip
def test_hostile_rpc_info_is_kept_aside_and_the_host_goes_on(
    host_env: HostEnv, content: bytes
) -> None:
    host_env.rpc_info.parent.mkdir(parents=True)
    host_env.rpc_info.write_bytes(content)
    with running_host(host_env) as host:
        assert host.handshake()["ok"]
    [backup] = host_env.rpc_info.parent.glob("rpc-info.json.corrupt-*")
    assert backup.read_bytes() == content
    assert [p["install_id"] for p in host_env.profiles()] == [host_env.install_id]


def test_fuzzed_native_messaging_frames_get_answers_not_crashes(host_env: HostEnv) -> None:
    import random

    rng = random.Random(20261121)
    values: list[object] = [None, True, 0, -1, 2**40, "", "x" * 300, [], {}, [1, "a"], {"k": 1}]
    ops = ["handshake", "pickDownloadDirectory", "deleteDownloadRoot", "openFile",
           "revealInFolder", "HANDSHAKE", "", "nope"]  # fmt: skip
    fields = ["id", "op", "extensionId", "installId", "key", "rootKey", "path", "extra"]
    answered = 0
    with running_host(host_env, JST_FOLDER_PICKER="/bin/false") as host:
        for n in range(300):
            body: bytes
            roll = rng.random()
            if roll < 0.15:
                body = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 40)))
            else:
                message: dict[str, object] = {
                    f: rng.choice(values) for f in rng.sample(fields, rng.randrange(0, 5))
                }
                if rng.random() < 0.7:
                    message["op"] = rng.choice(ops)
                if message.get("op") == "handshake":
                    message["op"] = "deleteDownloadRoot"  # keep the fuzz off the daemon
                if rng.random() < 0.8:
                    message["id"] = f"fuzz-{n}"
                body = json.dumps(message).encode()
                if isinstance(message.get("id"), str):
                    answered += 1
            host.send_raw(struct.pack("<I", len(body)) + body)
        replies = [host.recv() for _ in range(answered)]
        assert all(r["ok"] is False or r["type"] == "Empty" for r in replies)
        assert host.no_frame_within(0.5)  # nothing else: one answer per readable id
        assert host.request({"op": "deleteDownloadRoot", "key": "k"})["error"] == (
            "Root not found: k"
        )


def test_host_leaks_no_fd_or_process_over_many_requests(host_env: HostEnv) -> None:
    with running_host(host_env, JST_FOLDER_PICKER="/bin/false") as host:
        host.handshake()
        host_env.wait_for_profile(host.pid)
        before_fds, before_children = open_fds(host.pid), descendants(host.pid)
        for n in range(20):
            assert host.request({"op": "pickDownloadDirectory"})["ok"] is False  # cancelled
            assert host.request({"op": "openFile", "rootKey": "k", "path": "x"})["ok"] is False
            assert link(host_env, f"{MAGNET}&n={n}").returncode == 0
            assert host.recv()["event"] == "MagnetAdded"
            host.handshake()
        time.sleep(0.3)
        assert open_fds(host.pid) <= before_fds + 2
        assert descendants(host.pid) == before_children  # just the daemon


@pytest.mark.slow
def test_a_host_frozen_inside_an_update_delays_others_but_never_hangs_them(
    host_env: HostEnv,
) -> None:
    folder = host_env.base / "Frozen"
    folder.mkdir()
    # Writes: startup (1), handshake (2); the pick's write (3) stops holding the lock.
    frozen = start_host(host_env, "rpcinfo.before-rename@3=stop")
    try:
        host_env.wait_for_profile(frozen.pid)  # the startup write (see above)
        frozen.handshake()
        host_env.picker_answer.write_text(str(folder))
        frozen.send({"op": "pickDownloadDirectory"})
        wait_until(lambda: psutil.Process(frozen.pid).status() == psutil.STATUS_STOPPED, 10,
                   "the host to freeze")  # fmt: skip
        with running_host(host_env) as other:
            started = time.monotonic()
            reply = other.request(handshake_request(host_env) | {"installId": "other"}, timeout=20)
            assert reply["ok"] is False  # an answer, after the lock's bounded wait
            assert reply["error"] == "Failed to update extension ID or install ID"
            assert time.monotonic() - started < 15
            frozen.proc.kill()  # its lock dies with it
            frozen.proc.wait()
            assert other.request(handshake_request(host_env) | {"installId": "other"})["ok"]
        parse_rpc_info(host_env.rpc_info.read_bytes())
    finally:
        frozen.cleanup()
