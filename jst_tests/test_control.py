"""The host↔daemon control channel: the codec, a stream pair, and a real daemon on it."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from jst import control
from jst.control_stream import ControlStream
from jst_tests.daemonproc import DAEMON, DaemonEnv
from jst_tests.hostproc import gone_within, http

MESSAGES: list[control.Message] = [
    control.Ready(pid=12, port=41873, auth="tok"),
    control.Config(seq=3, extension_id="ext", roots={"k1": "/a", "k2": "/ü b"}),
    control.Config(seq=4, extension_id=None, roots={}),
    control.Config(seq=5, extension_id="ext", roots={}, install_id="b7c1"),
    control.Applied(seq=3),
    control.Stopping(reason="POST /control/shutdown"),
    control.Error(message="unsupported"),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips_as_one_versioned_line(message: control.Message) -> None:
    line = control.encode(message)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert line.startswith(b'{"v":1,')
    assert control.decode(line[:-1]) == message


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b"[]",
        b'{"type":"applied","seq":1}',  # no version
        b'{"v":2,"type":"applied","seq":1}',
        b'{"v":1,"type":"applied","seq":-1}',
        b'{"v":1,"type":"applied","seq":true}',
        b'{"v":1,"type":"config","seq":1,"extension_id":5,"roots":[]}',
        b'{"v":1,"type":"config","seq":1,"extension_id":null,"roots":[{"key":1}]}',
        b'{"v":1,"type":"config","seq":1,"extension_id":null,"roots":[],"install_id":7}',
        b'{"v":1,"type":"launch"}',
    ],
)
def test_invalid_lines_are_control_errors(line: bytes) -> None:
    with pytest.raises(control.ControlError):
        control.decode(line)


def test_decoder_handles_split_lines_and_caps_their_length() -> None:
    data = b"".join(control.encode(m) for m in MESSAGES)
    decoder = control.LineDecoder()
    got: list[control.Message] = []
    for i in range(0, len(data), 5):
        decoder.receive_data(data[i : i + 5])
        while (message := decoder.next_message()) is not None:
            got.append(message)
    assert got == MESSAGES
    capped = control.LineDecoder(max_line=100)
    capped.receive_data(b"x" * 101)
    with pytest.raises(control.ControlError):
        capped.next_message()


async def test_streams_carry_messages_both_ways() -> None:
    left, right = trio.testing.memory_stream_pair()
    host, daemon = ControlStream(left), ControlStream(right)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(daemon.send, MESSAGES[0])
        assert await host.receive() == MESSAGES[0]
        await host.send(MESSAGES[1])
        assert await daemon.receive() == MESSAGES[1]
    await host.aclose()
    assert await daemon.receive() is None


async def test_daemon_reports_ready_applies_config_and_exits_when_the_channel_closes(
    tmp_path: Path,
) -> None:
    env = DaemonEnv(tmp_path)
    env.root.mkdir(parents=True)
    path = str(tmp_path / "ctl")
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await listener.bind(path)
    listener.listen(1)
    proc = subprocess.Popen(  # noqa: ASYNC220 (started once, not awaited)
        [*DAEMON, "--install-id", "nobody", "--host-control", f"unix:{path}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        env=env.environ(JST_IO_DAEMON_TOKEN=env.token),
    )
    try:
        with trio.fail_after(10):
            sock, _ = await listener.accept()
            channel = ControlStream(trio.SocketStream(sock))
            ready = await channel.receive()
        assert isinstance(ready, control.Ready)
        assert (ready.pid, ready.auth) == (proc.pid, env.token)
        auth = {"X-JST-Auth": env.token}
        stat = f"/ops/stat?path=&root_key={'ab' * 8}"
        # Issue 17: the host starts its daemon before the handshake names the profile,
        # so a daemon under a host serves nothing before the host's first config: a
        # request that comes earlier waits in the backlog (it used to get a 403, "no
        # such root"), and is answered with the config's roots.
        early: list[int] = []
        async with trio.open_nursery() as nursery:

            async def ask() -> None:
                early.append(
                    (await trio.to_thread.run_sync(lambda: http(ready.port, stat, headers=auth)))[0]
                )

            nursery.start_soon(ask)
            await trio.sleep(0.3)
            assert early == []
            await channel.send(control.Config(1, "ext", {"ab" * 8: str(env.root)}))
            with trio.fail_after(5):
                assert await channel.receive() == control.Applied(1)
        assert early == [200]
        assert (await trio.to_thread.run_sync(lambda: http(ready.port, stat, headers=auth)))[
            0
        ] == 200
        await channel.aclose()
        assert await trio.to_thread.run_sync(gone_within, proc.pid, 1.0)
        assert proc.wait(1) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        listener.close()


def test_daemon_without_its_host_exits_with_an_error(tmp_path: Path) -> None:
    env = DaemonEnv(tmp_path)
    result = subprocess.run(
        [*DAEMON, "--token", "t", "--install-id", "i", "--host-control", f"unix:{tmp_path}/none"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=env.environ(),
        timeout=20,
    )
    assert result.returncode == 1
    assert b"cannot reach the host" in result.stderr


@contextmanager
def daemon_under_a_test_host(
    tmp_path: Path,
) -> Iterator[tuple[subprocess.Popen[bytes], socket.socket]]:
    """A daemon started with ``--host-control`` at our Unix socket, and the connection it
    made to it; the daemon is killed and reaped afterwards, whatever happened."""
    env = DaemonEnv(tmp_path)
    env.root.mkdir(parents=True)
    path = str(tmp_path / "ctl")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    listener.settimeout(10)
    proc = subprocess.Popen(
        [*DAEMON, "--install-id", "", "--host-control", f"unix:{path}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env.environ(JST_IO_DAEMON_TOKEN=env.token),
    )
    try:
        channel, _ = listener.accept()
        with channel:
            channel.settimeout(10)
            yield proc, channel
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
        listener.close()


def receive(channel: socket.socket, decoder: control.LineDecoder) -> control.Message:
    while (message := decoder.next_message()) is None:
        data = channel.recv(4096)
        assert data, "the daemon closed the control channel"
        decoder.receive_data(data)
    return message


@pytest.mark.parametrize("ending", ["sigterm", "host-closes"])
def test_a_daemon_waiting_for_its_first_config_ends_cleanly(tmp_path: Path, ending: str) -> None:
    # Before the host's first config the daemon serves nothing; a signal, or the host
    # going away, still ends it at once with status 0.
    with daemon_under_a_test_host(tmp_path) as (proc, channel):
        assert isinstance(receive(channel, control.LineDecoder()), control.Ready)
        if ending == "sigterm":
            proc.terminate()
        else:
            channel.close()
        assert proc.wait(5) == 0
        assert b"Traceback" not in (proc.stderr.read() if proc.stderr else b"")


def test_an_invalid_message_after_the_first_config_ends_the_daemon_cleanly(
    tmp_path: Path,
) -> None:
    """Logged and shut down like a closed channel, not a crash with a traceback (the
    error used to reach ``run_host_link`` inside trio's exception group, uncaught)."""
    with daemon_under_a_test_host(tmp_path) as (proc, channel):
        decoder = control.LineDecoder()
        assert isinstance(receive(channel, decoder), control.Ready)
        channel.sendall(control.encode(control.Config(1, None, {"ab" * 8: "/x"})))
        assert receive(channel, decoder) == control.Applied(1)
        channel.sendall(b"not json\n")
        assert proc.wait(10) == 0
        assert proc.stderr is not None
        err = proc.stderr.read()
        assert b"host sent an invalid control message" in err
        assert b"Traceback" not in err
