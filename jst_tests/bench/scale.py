"""``make bench`` scale scenario: N sockets on one ``/io`` session (issue 18).

For N = 1,000 and 10,000: connect all (200 TCP_CONNECTs outstanding), a burst in which
every socket sends one 64-byte message at once (it activates the pending sockets), warm
echo round trips on random sockets, a second burst (the steady figure: daemon CPU per
message), then the WebSocket closes and we time how long until a new session is
authenticated and until the daemon's fds are back to idle. RSS per pending socket is
the growth while the N sockets wait for their first send, divided by N.

The peers are one echo server process (``selectors``, non-blocking), the client is one
blocking WebSocket in this process (``io.WsClient``). Loopback only. The reference for
the echo time is a raw round trip to the same echo server with no daemon; the point of
the scenario is the last column, CPU per message at N against the figure at 1,000.
The shared instrument's ``scale.mjs`` measures the same things with a Node client.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import random
import resource
import selectors
import socket
import statistics
import struct
import time
from multiprocessing.synchronize import Event as EventType

import psutil

from jst_tests.bench.io import WsClient, frame, ws_frame
from jst_tests.daemonproc import DaemonEnv, read_port_line, spawn, stop

MSG = 64
CONNECT_WINDOW = 200
RTT_ROUNDS = 1000
SIZES = (1_000, 10_000)


def _echo_server(ports: mp.Queue[int], done: EventType) -> None:
    selector = selectors.DefaultSelector()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4096)
    server.setblocking(False)
    selector.register(server, selectors.EVENT_READ)
    ports.put(server.getsockname()[1])
    while not done.is_set():
        for key, _ in selector.select(0.2):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if sock is server:
                while True:
                    try:
                        conn, _ = server.accept()
                    except (BlockingIOError, OSError):
                        break
                    conn.setblocking(False)
                    selector.register(conn, selectors.EVENT_READ)
                continue
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                selector.unregister(sock)
                sock.close()
                continue
            with contextlib.suppress(OSError):
                sock.send(data)  # 64-byte echoes always fit the socket buffer


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _rss_kib(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss) / 1024


def _cpu(pid: int) -> float:
    """CPU seconds of all the daemon's threads, from schedstat (ns) where there is one:
    psutil's 10 ms ticks are too coarse for a 1,000-message burst."""
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as stat:
                total += int(stat.read().split()[0])
    except OSError:
        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)
    return total / 1e9


def _message(sid: int) -> bytes:
    return frame(0x12, 0, struct.pack("<I", sid) + struct.pack("<I", sid) + b"Z" * (MSG - 4))


def _collect(client: WsClient, want: dict[int, int]) -> None:
    """Read TCP_RECV frames until every socket in ``want`` got its bytes back."""
    missing = len(want)
    while missing:
        reply = client.receive()
        if reply[1] != 0x13:
            continue
        sid = struct.unpack_from("<I", reply, 8)[0]
        if sid not in want:
            raise AssertionError(f"socket {sid}: an echo nobody sent")
        if want[sid] == MSG and reply[12:16] != struct.pack("<I", sid):
            raise AssertionError(f"socket {sid}: wrong echo")
        left = want[sid] - (len(reply) - 12)
        want[sid] = left
        if left <= 0:
            missing -= 1


def _burst(client: WsClient, pid: int, n: int) -> tuple[float, float]:
    """(messages/s, daemon CPU µs per message) with all ``n`` sockets sending at once."""
    data = b"".join(ws_frame(_message(sid)) for sid in range(1, n + 1))
    cpu = _cpu(pid)
    start = time.monotonic()
    client.sock.sendall(data)
    _collect(client, dict.fromkeys(range(1, n + 1), MSG))
    elapsed = time.monotonic() - start
    return n / elapsed, (_cpu(pid) - cpu) / n * 1e6


def _raw_rtt(port: int, rounds: int) -> float:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            sock.sendall(b"Z" * MSG)
            got = 0
            while got < MSG:
                got += len(sock.recv(MSG))
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def run_one(env: DaemonEnv, echo_port: int, n: int) -> dict[str, float]:
    proc = spawn(env)
    result: dict[str, float] = {}
    try:
        port = read_port_line(proc)
        WsClient(port, env.token).sock.close()  # the daemon is fully started
        time.sleep(0.5)
        idle_fds = _fds(proc.pid)
        client = WsClient(port, env.token)
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rss_before = _rss_kib(proc.pid)

        start = time.monotonic()
        sent = done = 0
        while done < n:
            while sent < n and sent - done < CONNECT_WINDOW:
                sent += 1
                payload = struct.pack("<IH", sent, echo_port) + b"127.0.0.1"
                client.send(frame(0x10, sent, payload))
            reply = client.receive()
            if reply[1] == 0x11:
                if reply[12] != 0:
                    raise AssertionError(f"connect {struct.unpack_from('<I', reply, 8)[0]} failed")
                done += 1
        result["connect_ms"] = (time.monotonic() - start) * 1000
        time.sleep(0.5)
        result["kib_per_pending"] = (_rss_kib(proc.pid) - rss_before) / n

        result["burst1_msgs"], result["burst1_cpu_us"] = _burst(client, proc.pid, n)
        rtts = []
        for _ in range(RTT_ROUNDS):
            sid = random.randint(1, n)
            t0 = time.perf_counter()
            client.send(_message(sid))
            _collect(client, {sid: MSG})
            rtts.append(time.perf_counter() - t0)
        rtts.sort()
        result["rtt_p50_us"] = rtts[len(rtts) // 2] * 1e6
        result["rtt_p99_us"] = rtts[int(len(rtts) * 0.99)] * 1e6
        result["burst_msgs"], result["burst_cpu_us"] = _burst(client, proc.pid, n)

        closed_at = time.monotonic()
        client.sock.close()
        WsClient(port, env.token).sock.close()
        result["reopen_ms"] = (time.monotonic() - closed_at) * 1000
        deadline = time.monotonic() + 30
        while _fds(proc.pid) > idle_fds and time.monotonic() < deadline:
            time.sleep(0.05)
        result["fd_cleanup_ms"] = (time.monotonic() - closed_at) * 1000
        result["fds_back_to_idle"] = float(_fds(proc.pid) <= idle_fds)
    finally:
        stop(proc)
    return result


def rows(env: DaemonEnv) -> list[tuple[str, str, str, str]]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = max(SIZES) + 500
    if hard != resource.RLIM_INFINITY and hard < need:
        return [("scale", "skipped", "", f"RLIMIT_NOFILE hard limit {hard} < {need}")]
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))  # inherited by the children
    ports: mp.Queue[int] = mp.Queue()
    done = mp.Event()
    server = mp.Process(target=_echo_server, args=(ports, done), daemon=True)
    server.start()
    out: list[tuple[str, str, str, str]] = []
    try:
        echo_port = ports.get(timeout=10)
        ref = _raw_rtt(echo_port, RTT_ROUNDS)
        results = {n: run_one(env, echo_port, n) for n in SIZES}
    finally:
        done.set()
        server.join(timeout=5)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    base = results[SIZES[0]]["burst_cpu_us"]
    for n, r in results.items():
        tag = f"scale_{n}"
        out += [
            (f"{tag}_connect_all_ms", f"{r['connect_ms']:.0f}", "", ""),
            (
                f"{tag}_echo_p50_p99_us",
                f"{r['rtt_p50_us']:.0f} / {r['rtt_p99_us']:.0f}",
                "p99 <= 5000",
                f"raw echo p50 {ref:.0f} us",
            ),
            (f"{tag}_burst_msgs_per_s", f"{r['burst_msgs']:.0f}", "", ""),
            (
                f"{tag}_cpu_us_per_msg",
                f"{r['burst_cpu_us']:.1f}",
                "<= 1.5x N=1000",
                f"ratio to N={SIZES[0]}: {r['burst_cpu_us'] / base:.2f}",
            ),
            (f"{tag}_kib_per_pending_socket", f"{r['kib_per_pending']:.2f}", "<= 3", ""),
            (f"{tag}_new_session_after_close_ms", f"{r['reopen_ms']:.0f}", "<= 1500", ""),
            (
                f"{tag}_fds_back_to_idle",
                "yes" if r["fds_back_to_idle"] else "NO",
                "",
                f"after {r['fd_cleanup_ms']:.0f} ms",
            ),
        ]
    return out
