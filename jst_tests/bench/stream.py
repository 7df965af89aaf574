"""Streaming scenarios for ``make bench`` (blocking sockets and threads, loopback only).

* ``stream_256m_MBps``: one ``GET /stream/<token>`` of an available 256 MiB file, against
  the physical reference measured in the same run: ``os.sendfile`` of the same file to a
  loopback socket, read by the same receiver. Goal: >= 0.9x the reference.
* ``stream_wakeup_us``: a reader blocked on a missing range (its STREAM_NEED seen), then
  STREAM_HAVE sent; the time until its first body byte. Goal: p50 <= 1 ms.
* ``stream_seek_first_byte_us``: a request at a missing offset, the engine answering the
  STREAM_NEED at once with STREAM_HAVE; request sent -> first body byte. Beside it, the
  same request where the bytes are already available (no engine round trip).

The engine is a plain blocking WebSocket client (``io.WsClient``); readers are blocking
sockets in threads of this process, timed with ``perf_counter``.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import struct
import threading
import time
from pathlib import Path

from jst_tests.bench.io import WsClient, frame
from jst_tests.daemonproc import ROOT_KEY

MIB = 1024 * 1024
BIG = 256 * MIB
RECV_SIZE = 4 * MIB
ROUNDS = 5
SAMPLES = 60


def _read_head(sock: socket.socket) -> tuple[int, int, bytes]:
    """Status, Content-Length and the body bytes that came with the head."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the daemon closed the connection")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return int(head.split(b" ", 2)[1]), length, rest


def _drain(sock: socket.socket, count: int) -> None:
    buf = bytearray(RECV_SIZE)
    view = memoryview(buf)
    while count > 0:
        got = sock.recv_into(view, min(RECV_SIZE, count))
        if not got:
            raise ConnectionError("short body")
        count -= got


def _get(port: int, path: str, range_header: str | None = None) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    extra = f"Range: {range_header}\r\n" if range_header else ""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode())
    return sock


class Engine:
    """STREAM_OPEN / STREAM_HAVE / STREAM_NEED over a blocking WebSocket."""

    def __init__(self, port: int, token: str) -> None:
        self.ws = WsClient(port, token)

    def open(self, sid: int, path: str, length: int, have: list[list[int]]) -> str:
        body = json.dumps({"root_key": ROOT_KEY, "path": path, "length": length, "have": have})
        self.ws.send(frame(0x40, 100 + sid, struct.pack("<I", sid) + body.encode()))
        while True:
            reply = self.ws.receive()
            if reply[1] == 0x41 and struct.unpack_from("<I", reply, 8)[0] == sid:
                assert reply[12] == 0, reply[13:]
                return "/" + reply[13:].decode().split("/", 3)[3]

    def have(self, sid: int, start: int, end: int) -> None:
        self.ws.send(frame(0x42, 0, struct.pack("<IQQ", sid, start, end)))

    def need(self) -> tuple[int, int, int]:
        while True:
            message = self.ws.receive()
            if message[1] == 0x43:
                sid, start, end = struct.unpack_from("<IQQ", message, 8)
                return int(sid), int(start), int(end)

    def close(self) -> None:
        self.ws.sock.close()


def stream_once(port: int, url: str) -> float:
    start = time.perf_counter()
    with _get(port, url) as sock:
        status, length, rest = _read_head(sock)
        assert (status, length) == (200, BIG)
        _drain(sock, length - len(rest))
    return BIG / (time.perf_counter() - start) / 1e6


def ref_sendfile_once(path: Path) -> float:
    """The same file, the same receiver, ``os.sendfile`` in a thread as the sender."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)

        def send() -> None:
            conn, _ = server.accept()
            with conn, open(path, "rb") as file:
                conn.recv(1)
                offset = 0
                while offset < BIG:
                    offset += os.sendfile(conn.fileno(), file.fileno(), offset, BIG - offset)

        sender = threading.Thread(target=send)
        sender.start()
        start = time.perf_counter()
        with socket.create_connection(server.getsockname()) as sock:
            sock.sendall(b"!")
            _drain(sock, BIG)
        speed = BIG / (time.perf_counter() - start) / 1e6
        sender.join()
    return speed


def throughput(port: int, url: str, path: Path) -> tuple[float, float]:
    """Best of ``ROUNDS`` for the daemon and for the reference, interleaved, so that
    load from other processes on a shared machine hits both alike."""
    ours, raw = 0.0, 0.0
    for _ in range(ROUNDS):
        raw = max(raw, ref_sendfile_once(path))
        ours = max(ours, stream_once(port, url))
    return ours, raw


def wakeup(engine: Engine, port: int, url: str, sid: int, size: int) -> list[float]:
    """STREAM_HAVE -> first body byte at a blocked reader, microseconds."""
    samples = []
    for index in range(SAMPLES):
        offset = (index + 1) * (size // (SAMPLES + 2))
        with _get(port, url, f"bytes={offset}-{offset + 4095}") as sock:
            status, _length, rest = _read_head(sock)  # headers go out before the wait
            assert status == 206
            assert not rest
            assert engine.need()[:2] == (sid, offset)  # the reader is blocked now
            start = time.perf_counter()
            engine.have(sid, offset, offset + 4096)
            sock.recv(1)
            samples.append((time.perf_counter() - start) * 1e6)
    return samples


def seek(engine: Engine | None, port: int, url: str, sid: int, size: int) -> list[float]:
    """Request sent -> first body byte; ``engine`` answers the STREAM_NEED if given."""
    samples = []
    for index in range(SAMPLES):
        offset = (index + 1) * (size // (SAMPLES + 2)) + 8192
        start = time.perf_counter()
        with _get(port, url, f"bytes={offset}-") as sock:
            _status, _length, rest = _read_head(sock)
            if engine is not None:
                sid_seen, need_start, need_end = engine.need()
                assert (sid_seen, need_start) == (sid, offset)
                engine.have(sid, need_start, need_end)
            if not rest:
                sock.recv(1)
            samples.append((time.perf_counter() - start) * 1e6)
    return samples


def _percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    return f"p50 {statistics.median(ordered):.0f} / p99 {ordered[int(len(ordered) * 0.99)]:.0f}"


def rows(port: int, token: str, root: Path) -> list[tuple[str, str, str, str]]:
    big = root / "stream" / "big.bin"
    big.parent.mkdir(parents=True, exist_ok=True)
    with open(big, "wb") as file:
        chunk = os.urandom(MIB)
        for _ in range(BIG // MIB):
            file.write(chunk)
    engine = Engine(port, token)
    try:
        url = engine.open(1, "stream/big.bin", BIG, [[0, BIG]])
        mbps, raw = throughput(port, url, big)
        url_missing = engine.open(2, "stream/big.bin", BIG, [])
        woken = wakeup(engine, port, url_missing, 2, BIG)
        url_seek = engine.open(3, "stream/big.bin", BIG, [])
        answered = seek(engine, port, url_seek, 3, BIG)
        available = seek(None, port, url, 1, BIG)
    finally:
        engine.close()
        big.unlink()
    return [
        (
            "stream_256m_MBps",
            f"{mbps:.0f}",
            "goal >= 0.9x raw",
            f"raw os.sendfile to loopback {raw:.0f} MB/s (ratio {mbps / raw:.2f})",
        ),
        (
            "stream_wakeup_us",
            f"{statistics.median(woken):.0f}",
            "goal p50 <= 1000",
            f"STREAM_HAVE -> first byte at a blocked reader, {_percentiles(woken)}",
        ),
        (
            "stream_seek_first_byte_us",
            f"{statistics.median(answered):.0f}",
            "",
            f"engine answers the NEED at once, {_percentiles(answered)}; "
            f"bytes already available: {_percentiles(available)}",
        ),
    ]
