"""/io before AUTH costs little (issue 12, item 1): small messages only, 10 s to authenticate.

A real daemon, raw sockets, WebSocket frames built by hand (masked client frames), so the
tests see exactly what a hostile client sends and what the daemon answers on the wire.
"""

from __future__ import annotations

import concurrent.futures
import os
import socket
import struct
import time

import psutil

from jst_tests.daemonproc import RunningDaemon
from jst_tests.ioclient import AUTH, AUTH_RESULT, ERROR, HELLO, SERVER_HELLO, frame

MiB = 1024 * 1024
MASK = b"\x5a\xa5\x0f\xf0"


def client_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    if size < 126:
        head = bytes((first, 0x80 | size))
    elif size < 0x10000:
        head = bytes((first, 0x80 | 126)) + struct.pack("!H", size)
    else:
        head = bytes((first, 0x80 | 127)) + struct.pack("!Q", size)
    key = (MASK * (size // 4 + 1))[:size]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(size, "big")
    return head + MASK + body


def upgraded(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(
        b"GET /io HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, "no handshake answer"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101 ")
    assert head.endswith(b"\r\n\r\n")
    return sock


def read_messages(sock: socket.socket, count: int, deadline: float) -> list[bytes]:
    """Exactly ``count`` binary messages (fails on a Close or EOF before them)."""
    messages, code = read_frames(sock, deadline, count)
    assert len(messages) == count, (messages, code)
    return messages


def read_frames(
    sock: socket.socket, deadline: float, count: int | None = None
) -> tuple[list[bytes], int | None]:
    """Server frames until a Close (its code), EOF (``None``), or ``count`` messages."""
    buffer = b""
    messages: list[bytes] = []
    while True:
        while len(buffer) >= 2:
            opcode, size = buffer[0] & 0x0F, buffer[1] & 0x7F
            head = 2
            if size == 126:
                head, size = 4, struct.unpack_from("!H", buffer, 2)[0]
            elif size == 127:
                head, size = 10, struct.unpack_from("!Q", buffer, 2)[0]
            if len(buffer) < head + size:
                break
            payload, buffer = buffer[head : head + size], buffer[head + size :]
            if opcode == 0x8:
                return messages, struct.unpack("!H", payload[:2])[0] if payload else None
            messages.append(payload)
            if count is not None and len(messages) == count:
                return messages, None
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return messages, None
        if not chunk:
            return messages, None
        buffer += chunk


def test_a_big_message_before_auth_closes_with_1009(daemon: RunningDaemon) -> None:
    with upgraded(daemon.port) as sock:
        # Just the header of a 63 MiB message and a little of it: refused at once.
        sock.sendall(b"\x82\xff" + struct.pack("!Q", 63 * MiB) + MASK + b"\0" * 1024)
        _, code = read_frames(sock, time.monotonic() + 5)
        assert code == 1009


def test_fragments_over_64_kib_before_auth_close_with_1009(daemon: RunningDaemon) -> None:
    with upgraded(daemon.port) as sock:
        sock.sendall(client_frame(0x2, b"\0" * 60_000, fin=False))
        sock.sendall(client_frame(0x0, b"\0" * 10_000, fin=False))
        _, code = read_frames(sock, time.monotonic() + 5)
        assert code == 1009


def test_messages_up_to_64_kib_before_auth_are_served(daemon: RunningDaemon) -> None:
    with upgraded(daemon.port) as sock:
        # A CLIENT_HELLO with 60 KiB of extra payload (ignored) in three fragments.
        hello = frame(HELLO, 1, b"\0" * 60_000)
        sock.sendall(client_frame(0x2, hello[:20_000], fin=False))
        sock.sendall(client_frame(0x0, hello[20_000:40_000], fin=False))
        sock.sendall(client_frame(0x0, hello[40_000:]))
        sock.sendall(client_frame(0x2, frame(AUTH, 2, b"\x00" + daemon.env.token.encode())))
        # After AUTH the §6.1 limit (64 MiB) applies: a 2 MiB message is taken (an
        # unknown opcode, answered with ERROR rather than a close).
        sock.sendall(client_frame(0x2, frame(0x55, 3, b"\0" * (2 * MiB))))
        messages = read_messages(sock, 3, time.monotonic() + 10)
        assert [m[1] for m in messages] == [SERVER_HELLO, AUTH_RESULT, ERROR]
        assert messages[1][8:] == b"\x00"
        assert messages[2][4:8] == struct.pack("<I", 3)
        sock.sendall(client_frame(0x8, struct.pack("!H", 1000)))
        assert read_frames(sock, time.monotonic() + 5) == ([], 1000)


def test_a_session_that_does_not_authenticate_is_closed_after_10_s(
    daemon: RunningDaemon,
) -> None:
    with upgraded(daemon.port) as sock:
        started = time.monotonic()
        sock.sendall(client_frame(0x2, frame(HELLO, 1)))  # talking, but never AUTH
        messages, code = read_frames(sock, started + 20)
        waited = time.monotonic() - started
        assert [m[1] for m in messages] == [SERVER_HELLO]
        assert code == 1008
        assert 9 <= waited < 20


def test_32_unfinished_huge_messages_cost_the_daemon_little(daemon: RunningDaemon) -> None:
    process = psutil.Process(daemon.proc.pid)
    baseline = process.memory_info().rss
    fragment = client_frame(0x0, os.urandom(16 * 1024), fin=False)

    def attacker(_: int) -> int | None:
        with upgraded(daemon.port) as sock:
            try:
                sock.sendall(client_frame(0x2, b"\0" * 16 * 1024, fin=False))
                for _ in range(63 * 64):  # the rest of a 63 MiB message, never finished
                    sock.sendall(fragment)
            except OSError:
                pass  # closed by the daemon, as it should
            return read_frames(sock, time.monotonic() + 5)[1]

    peak = baseline
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        codes = pool.map(attacker, range(32))
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.05)
        results = list(codes)
    peak = max(peak, process.memory_info().rss)
    assert peak - baseline < 128 * MiB, f"daemon grew by {(peak - baseline) // MiB} MiB"
    # Each was told why (1009) unless the reset raced the Close frame (then EOF, None).
    assert set(results) <= {1009, None}
    assert 1009 in results
    # and the daemon still serves an authenticated client
    with upgraded(daemon.port) as sock:
        sock.sendall(client_frame(0x2, frame(AUTH, 2, b"\x00" + daemon.env.token.encode())))
        sock.sendall(client_frame(0x8, struct.pack("!H", 1000)))
        messages, _ = read_frames(sock, time.monotonic() + 5)
        assert [m[1] for m in messages] == [AUTH_RESULT]
