"""``/io`` WebSocket scenarios for ``make bench`` (blocking sockets and threads).

The client is deliberately cheap: frames are built once, masked with an all-zero key (legal
in RFC 6455; the daemon still runs its unmasking), and parsed with ``struct``. Peers
(source, sink, echo) are threads in this process. The reference is a raw loopback TCP
copy between the same kind of threads, measured in the same run. The shared instrument
(``node ../shared/bench/daemon-bench.mjs``) is the authoritative measurement; this one
needs nothing but Python.
"""

from __future__ import annotations

import base64
import os
import socket
import statistics
import struct
import threading
import time

import psutil

CHUNK = 256 * 1024
PATTERN = os.urandom(CHUNK)


def _listen() -> socket.socket:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    return server


def _serve(server: socket.socket, role: str, stop: threading.Event, counter: list[int]) -> None:
    server.settimeout(0.2)
    while not stop.is_set():
        try:
            conn, _ = server.accept()
        except TimeoutError:
            continue
        threading.Thread(target=_peer, args=(conn, role, stop, counter), daemon=True).start()


def _peer(conn: socket.socket, role: str, stop: threading.Event, counter: list[int]) -> None:
    conn.settimeout(0.5)
    with conn:
        try:
            if role == "source":
                conn.recv(1)
                while not stop.is_set():
                    conn.sendall(PATTERN)
            while not stop.is_set():
                try:
                    data = conn.recv(CHUNK)
                except TimeoutError:
                    continue
                if not data:
                    return
                counter[0] += len(data)
                if role == "echo":
                    conn.sendall(data)
        except OSError:
            return


def peer(role: str) -> tuple[int, threading.Event, list[int]]:
    server = _listen()
    stop = threading.Event()
    counter = [0]
    threading.Thread(target=_serve, args=(server, role, stop, counter), daemon=True).start()
    return server.getsockname()[1], stop, counter


class WsClient:
    def __init__(self, port: int, token: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /io HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.buf = bytearray()
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(4096)
        del self.buf[: self.buf.index(b"\r\n\r\n") + 4]
        self.send(frame(0x03, 2, b"\x01" + token.encode()))
        assert self.receive()[:9] == frame(0x04, 2, b"\x00")

    def send(self, message: bytes) -> None:
        self.sock.sendall(ws_frame(message))

    def receive(self) -> bytes:
        while True:
            if len(self.buf) >= 2:
                size = self.buf[1] & 0x7F
                head = 2
                if size == 126:
                    head, size = 4, struct.unpack_from(">H", self.buf, 2)[0]
                elif size == 127:
                    head, size = 10, struct.unpack_from(">Q", self.buf, 2)[0]
                if len(self.buf) >= head + size:
                    message = bytes(self.buf[head : head + size])
                    del self.buf[: head + size]
                    return message
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("daemon closed the WebSocket")
            self.buf += data

    def connect(self, sid: int, port: int) -> None:
        self.send(frame(0x10, sid, struct.pack("<IH", sid, port) + b"127.0.0.1"))
        while True:
            reply = self.receive()
            if reply[1] == 0x11 and struct.unpack_from("<I", reply, 8)[0] == sid:
                assert reply[12] == 0, "connect failed"
                return


def frame(opcode: int, request_id: int, payload: bytes) -> bytes:
    return struct.pack("<BBHI", 1, opcode, 0, request_id) + payload


def ws_frame(message: bytes) -> bytes:
    size = len(message)
    if size < 126:
        head = struct.pack(">BB", 0x82, 0x80 | size)
    elif size < 65536:
        head = struct.pack(">BBH", 0x82, 0x80 | 126, size)
    else:
        head = struct.pack(">BBQ", 0x82, 0x80 | 127, size)
    return head + b"\0\0\0\0" + message  # zero mask: the payload is sent as is


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def download(port: int, token: str, pid: int, sockets: int, seconds: float) -> tuple[float, float]:
    source, stop, _ = peer("source")
    client = WsClient(port, token)
    for sid in range(1, sockets + 1):
        client.connect(sid, source)
        client.send(frame(0x12, 0, struct.pack("<I", sid) + b"!"))
    got = 0
    start_cpu, start = cpu_seconds(pid), time.perf_counter()
    while time.perf_counter() - start < seconds:
        got += len(client.receive()) - 12
    elapsed, cpu = time.perf_counter() - start, cpu_seconds(pid) - start_cpu
    stop.set()
    client.sock.close()
    return got / elapsed / 1e6, cpu / (got / 1e9)


def upload(port: int, token: str, pid: int, size: int, seconds: float) -> tuple[float, float]:
    sink, stop, counter = peer("sink")
    client = WsClient(port, token)
    client.connect(1, sink)
    message = ws_frame(frame(0x12, 0, struct.pack("<I", 1) + PATTERN[:size]))
    batch = message * max(1, (1 << 20) // len(message))
    start_cpu, start, base = cpu_seconds(pid), time.perf_counter(), counter[0]
    while time.perf_counter() - start < seconds:
        client.sock.sendall(batch)
    moved = counter[0] - base
    elapsed, cpu = time.perf_counter() - start, cpu_seconds(pid) - start_cpu
    stop.set()
    client.sock.close()
    return moved / elapsed / 1e6, cpu / max(moved / 1e9, 1e-9)


def echo_rtt(port: int, token: str, rounds: int) -> tuple[float, float]:
    echo, stop, _ = peer("echo")
    client = WsClient(port, token)
    client.connect(1, echo)
    message = ws_frame(frame(0x12, 0, struct.pack("<I", 1) + b"x" * 64))
    samples = []
    for index in range(rounds + 200):
        start = time.perf_counter()
        client.sock.sendall(message)
        got = 0
        while got < 64:
            got += len(client.receive()) - 12
        if index >= 200:
            samples.append((time.perf_counter() - start) * 1e6)
    stop.set()
    client.sock.close()
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99)]


def ref_tcp_copy(seconds: float) -> float:
    source, stop, _ = peer("source")
    sock = socket.create_connection(("127.0.0.1", source))
    sock.sendall(b"!")
    got, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        got += len(sock.recv(1 << 20))
    stop.set()
    sock.close()
    return got / (time.perf_counter() - start) / 1e6


def ref_echo_rtt(rounds: int) -> float:
    echo, stop, _ = peer("echo")
    sock = socket.create_connection(("127.0.0.1", echo))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        sock.sendall(b"x" * 64)
        got = 0
        while got < 64:
            got += len(sock.recv(64))
        samples.append((time.perf_counter() - start) * 1e6)
    stop.set()
    sock.close()
    return statistics.median(samples)


def rows(port: int, token: str, pid: int, seconds: float) -> list[tuple[str, str, str, str]]:
    raw = ref_tcp_copy(1.0)
    result = []
    for sockets in (1, 16):
        mbps, cpu = download(port, token, pid, sockets, seconds)
        result.append(
            (
                f"ws_tcp_download_{sockets}sock_MBps",
                f"{mbps:.0f}",
                "target >= 400",
                f"raw loopback copy {raw:.0f} MB/s (ratio {mbps / raw:.2f}); "
                f"{cpu:.2f} CPU-s/GB (target <= 3)",
            )
        )
    for size, label, target in ((16 * 1024, "16k", "target >= 350"), (CHUNK, "256k", "")):
        mbps, cpu = upload(port, token, pid, size, seconds)
        result.append(
            (
                f"ws_tcp_upload_{label}_MBps",
                f"{mbps:.0f}",
                target,
                f"raw loopback copy {raw:.0f} MB/s (ratio {mbps / raw:.2f}); {cpu:.2f} CPU-s/GB",
            )
        )
    ref_rtt = ref_echo_rtt(1000)
    p50, p99 = echo_rtt(port, token, 1000)
    result.append(
        (
            "ws_echo_rtt_p50_us",
            f"{p50:.0f}",
            "target <= 300",
            f"p99 {p99:.0f} us; raw TCP echo p50 {ref_rtt:.0f} us (ratio {p50 / ref_rtt:.1f})",
        )
    )
    return result
