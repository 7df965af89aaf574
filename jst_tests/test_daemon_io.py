"""The /io WebSocket multiplexer against a real daemon and real loopback peers (§6)."""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import ssl
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trustme
from trio_websocket import ConnectionClosed

from jst_tests import netns
from jst_tests.daemonproc import DaemonEnv, RunningDaemon, running_daemon
from jst_tests.httpclient import HttpClient
from jst_tests.ioclient import (
    AUTH,
    AUTH_RESULT,
    ERROR,
    HELLO,
    SERVER_HELLO,
    TCP_ACCEPT,
    TCP_CLOSE,
    TCP_CONNECT,
    TCP_LISTEN_RESULT,
    TCP_SECURE,
    TCP_SECURED,
    TCP_SEND,
    TCP_STOP_LISTEN,
    UDP_CLOSE,
    UDP_JOIN,
    UDP_LEAVE,
    UDP_RECV,
    IoClient,
    echo_handler,
    frame,
    io_session,
    start_tcp_server,
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def stats(daemon: RunningDaemon) -> dict[str, int]:
    async with HttpClient(daemon.port) as http:
        reply = await http.request("GET", "/stats", daemon.auth)
        assert reply.status == 200
        result: dict[str, int] = reply.json()
        return result


async def wait_for_stats(daemon: RunningDaemon, **expected: int) -> dict[str, int]:
    """/stats eventually shows ``expected`` (closes complete asynchronously)."""
    with trio.fail_after(5):
        while True:
            current = await stats(daemon)
            if all(current[key] == value for key, value in expected.items()):
                return current
            await trio.sleep(0.02)


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def still_serving(client: IoClient) -> None:
    """The session answers: an unknown opcode gets ERROR with its request id."""
    await client.send(0x55, 4242)
    reply = await client.expect(ERROR)
    assert (reply.request_id, reply.payload) == (4242, b"Unknown opcode")


# -- transport and handshake (§6.1, §6.4) --------------------------------------------------


async def test_upgrade_status_line_and_silence_until_the_client_speaks(
    daemon: RunningDaemon,
) -> None:
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as raw:
        raw.sendall(
            b"GET /io HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        head = raw.recv(4096)
        assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        assert b"\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in head
        assert head.endswith(b"\r\n\r\n")  # nothing after the handshake
        raw.settimeout(0.3)
        with pytest.raises(TimeoutError):
            raw.recv(4096)  # no frame (no ping) before the client's first
        # One masked CLIENT_HELLO; the answer is one unfragmented frame.
        payload = frame(HELLO, 1)
        raw.sendall(bytes([0x82, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
        raw.settimeout(5)
        answer = raw.recv(4096)
        assert answer == bytes([0x82, 8]) + frame(SERVER_HELLO, 1)


@pytest.mark.parametrize(
    "auth_payload",
    [
        pytest.param(lambda t: b"\x00" + t + b"\x00ext\x00install", id="type0-with-ids"),
        pytest.param(lambda t: b"\x00" + t, id="type0-bare"),
        pytest.param(lambda t: b"\x01" + t, id="type1-legacy"),
    ],
)
async def test_hello_and_auth_succeed(daemon: RunningDaemon, auth_payload: object) -> None:
    build = auth_payload
    assert callable(build)
    async with io_session(daemon.port) as client:
        await client.send(HELLO, 77, b"ignored payload")
        hello = await client.next()
        assert (hello.opcode, hello.request_id, hello.payload) == (SERVER_HELLO, 77, b"")
        await client.send(HELLO, 78)  # may be repeated
        assert (await client.next()).request_id == 78
        await client.send(AUTH, 0xDEADBEEF, build(daemon.env.token.encode()))
        result = await client.next()
        assert (result.opcode, result.request_id, result.payload) == (
            AUTH_RESULT,
            0xDEADBEEF,
            b"\x00",
        )
        await still_serving(client)
        # Once authenticated, HELLO and AUTH are unknown opcodes (§6.4).
        await client.send(HELLO, 5)
        assert (await client.next()).payload == b"Unknown opcode"


@pytest.mark.parametrize(
    ("opcode", "payload", "version", "expected"),
    [
        (AUTH, b"\x00wrong-token\x00\x00", 1, (AUTH_RESULT, b"\x01Invalid token")),
        (AUTH, b"", 1, (ERROR, b"Empty auth payload")),
        (AUTH, b"\x07token", 1, (ERROR, b"Unknown auth type")),
        (
            TCP_CONNECT,
            struct.pack("<IH", 1, 80) + b"127.0.0.1",
            1,
            (ERROR, b"Authentication required"),
        ),
        (HELLO, b"", 2, (ERROR, b"Invalid protocol version")),
    ],
)
async def test_auth_failures_are_delivered_before_the_close(
    daemon: RunningDaemon, opcode: int, payload: bytes, version: int, expected: tuple[int, bytes]
) -> None:
    async with io_session(daemon.port) as client:
        await client.ws.send_message(frame(opcode, 31337, payload, version=version))
        reply = await client.next()
        assert (reply.opcode, reply.payload) == expected
        assert reply.request_id == 31337
        with trio.fail_after(5), pytest.raises(ConnectionClosed):
            await client.ws.get_message()  # then a proper Close frame ends it (§9.24)


async def test_short_and_text_messages_are_ignored(daemon: RunningDaemon) -> None:
    async with io_session(daemon.port) as client:
        await client.ws.send_message(b"\x01\x01\x00")
        await client.ws.send_message("text is not the protocol")
        await client.authenticate(daemon.env.token)
        await client.ws.send_message(b"\x01\x12")
        await client.ws.send_message("still ignored")
        await still_serving(client)


async def test_wrong_version_after_auth_closes_the_session(daemon: RunningDaemon) -> None:
    async with io_session(daemon.port, daemon.env.token) as client:
        await client.ws.send_message(frame(TCP_SEND, 9, b"\0\0\0\0", version=3))
        reply = await client.next()
        assert (reply.opcode, reply.request_id, reply.payload) == (
            ERROR,
            9,
            b"Invalid protocol version",
        )


# -- TCP client sockets (§6.5) ------------------------------------------------------------


async def test_tcp_echo_and_remote_close(daemon: RunningDaemon, nursery: trio.Nursery) -> None:
    peer_streams: list[trio.SocketStream] = []

    async def hello_then_close(stream: trio.SocketStream) -> None:
        peer_streams.append(stream)
        data = await stream.receive_some(100)
        await stream.send_all(b"yo:" + data)
        await stream.aclose()

    port = await start_tcp_server(nursery, hello_then_close)
    async with io_session(daemon.port, daemon.env.token) as client:
        assert await client.connect(7, port, rid=0x11223344)
        await client.tcp_send(7, b"hi")
        assert await client.receive_exactly(7, 5) == b"yo:hi"
        await client.expect_close(7)
        # The closed socket is gone from the table: later sends are silently dropped.
        await client.tcp_send(7, b"late")
        await still_serving(client)
        await wait_for_stats(daemon, tcp_sockets=0, pending_tcp=0, ws_connections=1)


async def test_connect_failures_report_status_1(daemon: RunningDaemon) -> None:
    async with io_session(daemon.port, daemon.env.token) as client:
        assert not await client.connect(1, free_port())  # refused
        assert not await client.connect(2, 80, host="no such host.invalid")
        assert not await client.connect(3, 80, host="")
        # A payload shorter than 6 bytes gets no reply at all (§6.10).
        await client.send(TCP_CONNECT, 4, b"\x04\0\0\0\x50")
        await still_serving(client)
        await wait_for_stats(daemon, pending_connects=0, tcp_sockets=0)


async def test_ipv6_literal_with_brackets(daemon: RunningDaemon, nursery: trio.Nursery) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, host="::1"), echo_handler, 0
        )
    except OSError:
        pytest.skip("::1 is not configured")
    port = listeners[0].socket.getsockname()[1]
    async with io_session(daemon.port, daemon.env.token) as client:
        assert await client.connect(1, port, host="[::1]")
        await client.tcp_send(1, b"six")
        assert await client.receive_exactly(1, 3) == b"six"


async def test_pending_socket_reports_peer_close_without_a_send(
    daemon: RunningDaemon, nursery: trio.Nursery
) -> None:
    """§9.4: a peer that connects-and-closes is reported before the client sends."""

    async def close_at_once(stream: trio.SocketStream) -> None:
        await stream.aclose()

    port = await start_tcp_server(nursery, close_at_once)
    async with io_session(daemon.port, daemon.env.token) as client:
        assert await client.connect(3, port)
        await client.expect_close(3)
        await wait_for_stats(daemon, pending_tcp=0, tcp_sockets=0)


async def test_many_pending_sockets_each_report_only_their_own_close(
    daemon: RunningDaemon, nursery: trio.Nursery
) -> None:
    """§9.4 with one readiness set per session: of 100 pending sockets, exactly those
    whose peer closes are reported, and the others (some with a banner waiting, which
    must not look like a close) work once activated."""
    accepted = [0]

    async def by_order(stream: trio.SocketStream) -> None:
        accepted[0] += 1
        k = accepted[0]  # the client connects one by one: k is the socket id
        if k % 2:
            await stream.aclose()
            return
        if k % 4 == 0:
            await stream.send_all(b"hi")
        with contextlib.suppress(trio.BrokenResourceError):
            async for data in stream:
                await stream.send_all(data)

    port = await start_tcp_server(nursery, by_order)
    count = 100
    async with io_session(daemon.port, daemon.env.token) as client:
        for sid in range(1, count + 1):
            assert await client.connect(sid, port)
        closed = set()
        for _ in range(count // 2):
            closed.add((await client.expect(TCP_CLOSE)).socket_id)
        assert closed == set(range(1, count + 1, 2))
        await wait_for_stats(daemon, pending_tcp=count // 2)
        for sid in range(2, count + 1, 2):
            await client.tcp_send(sid, b"x")
        for sid in range(2, count + 1, 2):
            expected = b"hix" if sid % 4 == 0 else b"x"
            assert await client.receive_exactly(sid, len(expected)) == expected
        assert not [f for f in client.backlog if f.opcode == TCP_CLOSE]
        await wait_for_stats(daemon, pending_tcp=0, tcp_sockets=count // 2)


async def test_pending_socket_keeps_unread_data_for_the_first_send(
    daemon: RunningDaemon, nursery: trio.Nursery
) -> None:
    """The peek must not consume: data sent before activation arrives after it."""
    go_on = trio.Event()

    async def greet_first(stream: trio.SocketStream) -> None:
        await stream.send_all(b"banner\n")
        await go_on.wait()
        data = await stream.receive_some(100)
        await stream.send_all(data.upper())

    port = await start_tcp_server(nursery, greet_first)
    async with io_session(daemon.port, daemon.env.token) as client:
        assert await client.connect(4, port)
        await wait_for_stats(daemon, pending_tcp=1)
        with pytest.raises(trio.TooSlowError):  # pending: nothing is read or reported
            await client.next(within=0.3)
        await client.tcp_send(4, b"ping")
        go_on.set()
        assert await client.receive_exactly(4, 11) == b"banner\nPING"


async def test_peer_half_close_delivers_data_then_close(
    daemon: RunningDaemon, nursery: trio.Nursery
) -> None:
    async def send_then_fin(stream: trio.SocketStream) -> None:
        await stream.receive_some(10)
        await stream.send_all(b"last words")
        await stream.send_eof()
        await trio.sleep(5)  # keeps reading side open: still reported as a close

    port = await start_tcp_server(nursery, send_then_fin)
    async with io_session(daemon.port, daemon.env.token) as client:
        assert await client.connect(5, port)
        await client.tcp_send(5, b"x")
        assert await client.receive_exactly(5, 10) == b"last words"
        await client.expect_close(5)


async def test_client_close_flushes_then_fin_then_reports(
    daemon: RunningDaemon, nursery: trio.Nursery
) -> None:
    received = trio.Event()
    got: list[bytes | bytearray] = []

    async def sink(stream: trio.SocketStream) -> None:
        async for data in stream:
            got.append(data)
        received.set()  # EOF seen: the daemon sent FIN after the data

    port = await start_tcp_server(nursery, sink)
    payload = os.urandom(3 * 1024 * 1024)
    async with io_session(daemon.port, daemon.env.token) as client:
        assert await client.connect(6, port)
        for offset in range(0, len(payload), 100_000):
            await client.tcp_send(6, payload[offset : offset + 100_000])
        await client.send(TCP_CLOSE, 0, struct.pack("<I", 6) + b"extra ignored")
        await client.expect_close(6)
        with trio.fail_after(5):
            await received.wait()
        assert b"".join(got) == payload
        await wait_for_stats(daemon, tcp_sockets=0)


async def test_client_close_of_a_pending_or_connecting_socket_is_silent(
    daemon: RunningDaemon, nursery: trio.Nursery
) -> None:
    port = await start_tcp_server(nursery, echo_handler)
    async with io_session(daemon.port, daemon.env.token) as client:
        assert await client.connect(8, port)
        await client.send(TCP_CLOSE, 0, struct.pack("<I", 8))
        await wait_for_stats(daemon, pending_tcp=0, tcp_sockets=0)
        with pytest.raises(trio.TooSlowError):
            await client.next(within=0.3)


async def test_two_hundred_concurrent_sockets(daemon: RunningDaemon, nursery: trio.Nursery) -> None:
    port = await start_tcp_server(nursery, echo_handler)
    count = 200
    async with io_session(daemon.port, daemon.env.token) as client:
        for sid in range(1, count + 1):
            await client.send(TCP_CONNECT, sid, struct.pack("<IH", sid, port) + b"127.0.0.1")
        for _ in range(count):
            reply = await client.next()
            assert reply.payload[4] == 0
        for round_number in range(3):
            for sid in range(1, count + 1):
                await client.tcp_send(sid, f"{sid}:{round_number};".encode())
            for sid in range(1, count + 1):
                expected = f"{sid}:{round_number};".encode()
                assert await client.receive_exactly(sid, len(expected)) == expected
        current = await stats(daemon)
        assert current["tcp_sockets"] == count
        assert current["bytes_sent"] >= count * 3 * 4


async def test_large_stream_is_neither_lost_nor_reordered(
    daemon: RunningDaemon, nursery: trio.Nursery
) -> None:
    blob = os.urandom(8 * 1024 * 1024)

    async def source(stream: trio.SocketStream) -> None:
        await stream.receive_some(1)
        await stream.send_all(blob)
        await stream.aclose()

    port = await start_tcp_server(nursery, source)
    async with io_session(daemon.port, daemon.env.token) as client:
        assert await client.connect(9, port)
        await client.tcp_send(9, b"!")
        assert await client.receive_exactly(9, len(blob)) == blob
        await client.expect_close(9)


async def test_dropped_websocket_closes_every_socket(
    daemon: RunningDaemon, nursery: trio.Nursery
) -> None:
    port = await start_tcp_server(nursery, echo_handler)
    await wait_for_stats(daemon, ws_connections=0)
    before = fd_count(daemon.proc.pid)
    peer_closed = trio.Event()

    async def watch_accept(stream: trio.SocketStream) -> None:
        async for _ in stream:
            pass
        peer_closed.set()

    watch_port = await start_tcp_server(nursery, watch_accept)
    async with io_session(daemon.port, daemon.env.token) as client:
        for sid in range(1, 21):
            assert await client.connect(sid, port)
            await client.tcp_send(sid, b"x" * 1000)
        assert await client.connect(50, watch_port)
        await client.tcp_send(50, b"hello")
        assert await client.listen(60) is not None
        assert await client.udp_bind(61) is not None
        assert await client.connect(62, port)  # stays pending
        await wait_for_stats(daemon, tcp_sockets=21, tcp_servers=1, udp_sockets=1, pending_tcp=1)
    # The WebSocket is gone mid-transfer: every socket closes, the peer sees EOF.
    with trio.fail_after(5):
        await peer_closed.wait()
    await wait_for_stats(
        daemon,
        tcp_sockets=0,
        pending_tcp=0,
        pending_connects=0,
        tcp_servers=0,
        udp_sockets=0,
        ws_connections=0,
    )
    with trio.fail_after(5):
        while fd_count(daemon.proc.pid) > before:  # noqa: ASYNC110 (polling another process)
            await trio.sleep(0.05)


# -- TLS (§6.6) ---------------------------------------------------------------------------


@pytest.fixture
def test_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_daemon(
    daemon_env: DaemonEnv, test_ca: trustme.CA, tmp_path: Path
) -> Iterator[RunningDaemon]:
    ca_file = tmp_path / "ca.pem"
    test_ca.cert_pem.write_to_path(str(ca_file))
    with running_daemon(daemon_env, extra_env={"SSL_CERT_FILE": str(ca_file)}) as running:
        yield running


async def start_tls_echo(nursery: trio.Nursery, test_ca: trustme.CA, name: str) -> int:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    test_ca.issue_cert(name).configure_cert(context)

    async def tls_echo(stream: trio.SocketStream) -> None:
        tls = trio.SSLStream(stream, context, server_side=True)
        try:
            await tls.do_handshake()
            async for data in tls:
                await tls.send_all(data)
        except trio.BrokenResourceError:
            pass

    return await start_tcp_server(nursery, tls_echo)


async def secure(client: IoClient, sid: int, hostname: str, skip_verify: bool = False) -> bool:
    payload = struct.pack("<IB", sid, 1 if skip_verify else 0) + hostname.encode()
    await client.send(TCP_SECURE, 0x5EC, payload)
    reply = await client.expect(TCP_SECURED, sid)
    assert reply.request_id == 0x5EC
    assert len(reply.payload) == 5
    return reply.payload[4] == 0


async def test_tls_upgrade_with_sni_and_verification(
    tls_daemon: RunningDaemon, test_ca: trustme.CA, nursery: trio.Nursery
) -> None:
    port = await start_tls_echo(nursery, test_ca, "tracker.test")
    async with io_session(tls_daemon.port, tls_daemon.env.token) as client:
        assert await client.connect(1, port)
        assert await secure(client, 1, "tracker.test")
        big = os.urandom(300_000)  # more than one TLS record: full writes (§9.5)
        await client.tcp_send(1, big)
        assert await client.receive_exactly(1, len(big)) == big
        # Wrong host name: refused, socket forgotten, no TCP_CLOSE.
        assert await client.connect(2, port)
        assert not await secure(client, 2, "other.test")
        await client.tcp_send(2, b"dropped")
        # skip_verify accepts the same certificate under any name.
        assert await client.connect(3, port)
        assert await secure(client, 3, "other.test", skip_verify=True)
        await client.tcp_send(3, b"ok")
        assert await client.receive_exactly(3, 2) == b"ok"
        # Not pending (unknown, or already activated): immediate failure.
        assert not await secure(client, 99, "tracker.test")
        assert not await secure(client, 1, "tracker.test")
        with pytest.raises(trio.TooSlowError):
            await client.expect(TCP_CLOSE, 2)  # a failed handshake sends no close
    await wait_for_stats(tls_daemon, tcp_sockets=0, pending_tcp=0)


# -- TCP servers (§6.7) -------------------------------------------------------------------


async def test_listen_accept_stop_and_rebind(daemon: RunningDaemon) -> None:
    async with io_session(daemon.port, daemon.env.token) as client:
        port = await client.listen(3)
        assert port is not None
        peer = await trio.open_tcp_stream("127.0.0.1", port)
        accept = await client.expect(TCP_ACCEPT)
        server_id, sid, remote_port = struct.unpack_from("<IIH", accept.payload)
        assert (accept.request_id, server_id) == (0, 3)
        assert sid >= 0x8000_0000  # never collides with the engine's ids (§9.7)
        assert accept.payload[10:] == b"127.0.0.1"
        assert remote_port == peer.socket.getsockname()[1]
        await peer.send_all(b"from peer")
        assert await client.receive_exactly(sid, 9) == b"from peer"
        await client.tcp_send(sid, b"to peer")
        with trio.fail_after(5):
            assert await peer.receive_some(100) == b"to peer"
        # A second connection gets a different id.
        peer2 = await trio.open_tcp_stream("127.0.0.1", port)
        sid2 = struct.unpack_from("<I", (await client.expect(TCP_ACCEPT)).payload, 4)[0]
        assert sid2 not in (sid, 3)
        await wait_for_stats(daemon, tcp_servers=1, tcp_sockets=2)
        # Stop: the port is free at once, accepted sockets stay open.
        await client.send(TCP_STOP_LISTEN, 0, struct.pack("<I", 3))
        await wait_for_stats(daemon, tcp_servers=0)
        with pytest.raises(OSError, match="connect"):
            await trio.open_tcp_stream("127.0.0.1", port)
        await peer.send_all(b"still here")
        assert await client.receive_exactly(sid, 10) == b"still here"
        assert await client.listen(4, port) == port  # rebind the same port
        await peer2.aclose()
        await client.expect_close(sid2)
        await peer.aclose()


async def test_listen_on_a_port_in_use_fails(daemon: RunningDaemon) -> None:
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with io_session(daemon.port, daemon.env.token) as client:
            assert await client.listen(1, port) is None
            assert await client.listen(2, 0, address="no-such-name.invalid") is None
            # Malformed (too short) requests get no reply (§6.10).
            await client.send(0x15, 5, b"\x01\0\0\0\0")
            await still_serving(client)
            with pytest.raises(trio.TooSlowError):
                await client.expect(TCP_LISTEN_RESULT, 1)


# -- UDP (§6.8, §6.9) ---------------------------------------------------------------------


async def test_udp_echo_with_source_address(daemon: RunningDaemon) -> None:
    peer = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await peer.bind(("127.0.0.1", 0))
    peer_port = peer.getsockname()[1]
    with peer:
        async with io_session(daemon.port, daemon.env.token) as client:
            bound = await client.udp_bind(2)
            assert bound is not None
            await client.udp_send(2, "127.0.0.1", peer_port, b"ab")
            with trio.fail_after(5):
                data, source = await peer.recvfrom(100)
            assert (data, source) == (b"ab", ("127.0.0.1", bound))
            await peer.sendto(b"cd", ("127.0.0.1", bound))
            event = await client.expect(UDP_RECV, 2)
            assert event.request_id == 0
            assert event.payload == (struct.pack("<IHH", 2, peer_port, 9) + b"127.0.0.1" + b"cd")
            # A send to a host name is resolved (here: localhost).
            await client.udp_send(2, "localhost", peer_port, b"named")
            with trio.fail_after(5):
                assert (await peer.recvfrom(100))[0] == b"named"
            await wait_for_stats(daemon, udp_sockets=1)
            await client.send(UDP_CLOSE, 0, struct.pack("<I", 2))
            await wait_for_stats(daemon, udp_sockets=0)
            # The port is released at once.
            again = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with again:
                await again.bind(("127.0.0.1", bound))


async def test_udp_bind_failures(daemon: RunningDaemon) -> None:
    async with io_session(daemon.port, daemon.env.token) as client:
        assert await client.udp_bind(1, 0, "localhost") is None  # IP literals only
        assert await client.udp_bind(2, 0, "999.1.1.1") is None
        assert await client.udp_bind(3, 0, "[::1]") is not None or not socket.has_ipv6
        await wait_for_stats(daemon, udp_sockets=1 if socket.has_ipv6 else 0)


async def test_multicast_requests_on_bad_input_are_ignored(daemon: RunningDaemon) -> None:
    """Malformed joins change nothing (no group is joined: that would leave loopback)."""
    async with io_session(daemon.port, daemon.env.token) as client:
        bound = await client.udp_bind(1, 0, "127.0.0.1")
        assert bound is not None
        await client.send(UDP_JOIN, 0, struct.pack("<I", 1) + b"not-an-ip")
        await client.send(UDP_JOIN, 0, struct.pack("<I", 1) + b"ff02::1")  # not IPv4
        await client.send(UDP_JOIN, 0, struct.pack("<I", 77) + b"239.192.152.143")  # unknown
        await client.send(UDP_LEAVE, 0, struct.pack("<I", 1) + b"garbage")
        await still_serving(client)
        peer = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with peer:
            await peer.sendto(b"after", ("127.0.0.1", bound))
        assert (await client.expect(UDP_RECV, 1)).payload.endswith(b"after")


async def test_sessions_are_independent(daemon: RunningDaemon, nursery: trio.Nursery) -> None:
    port = await start_tcp_server(nursery, echo_handler)
    async with (
        io_session(daemon.port, daemon.env.token) as first,
        io_session(daemon.port, daemon.env.token) as second,
    ):
        assert await first.connect(1, port)
        assert await second.connect(1, port)  # same id, other session
        await first.tcp_send(1, b"one")
        await second.tcp_send(1, b"two")
        assert await first.receive_exactly(1, 3) == b"one"
        assert await second.receive_exactly(1, 3) == b"two"
        await wait_for_stats(daemon, ws_connections=2, tcp_sockets=2)


def test_multicast_join_receive_leave_in_a_private_network() -> None:
    """§6.9 end to end. Joining a group sends IGMP reports on every interface, so this
    runs only inside a network namespace whose one interface is lo."""
    reason = netns.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    result = netns.run_isolated([sys.executable, "-m", "jst_tests.multicast_scenario"])
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
    assert b"multicast scenario passed" in result.stdout
