"""Cold start, as the extension feels it (issue 17), beside the bare interpreter start.

Each run: a fresh config directory, ``jst-native-host`` spawned with the caller's origin
as Chrome does, a ``handshake`` frame, then ``GET /health`` on the returned port until it
answers 200. Timed from just before the spawn to the ``DaemonInfo`` frame and to the
first 200. The reference is ``python -c pass`` with the same interpreter, measured in the
same run: no Python program can answer sooner than that. Loopback only.

Run alone: ``python -m jst_tests.bench.coldstart [--runs N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

EXTENSION_ID = "abcdefghijklmnopabcdefghijklmnop"
ORIGIN = f"chrome-extension://{EXTENSION_ID}/"
HEALTH_DEADLINE = 10.0


def host_command() -> list[str]:
    """The console script Chrome would run (the installed manifest points at it)."""
    script = Path(sys.executable).with_name("jst-native-host")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "jst.host.cli"]


def _read_exact(fd: int, n: int, deadline: float) -> bytes:
    data = b""
    while len(data) < n:
        if time.monotonic() > deadline:
            raise TimeoutError("no DaemonInfo frame in time")
        chunk = os.read(fd, n - len(data))
        if not chunk:
            raise ConnectionError("host closed stdout before answering")
        data += chunk
    return data


def _health(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            head = sock.recv(64)
    except OSError:
        return False
    return head.startswith(b"HTTP/1.1 200")


def one_cold_start(base: Path) -> tuple[float, float]:
    """(ms to DaemonInfo, ms to first /health 200) for one host in a fresh config dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JST", "JSTORRENT"))}
    env["JSTORRENT_CONFIG_DIR"] = str(base / "config")
    request = json.dumps(
        {
            "op": "handshake",
            "extensionId": EXTENSION_ID,
            "installId": str(uuid.uuid4()),
            "id": str(uuid.uuid4()),
        }
    ).encode()
    start = time.monotonic()
    proc = subprocess.Popen(
        [*host_command(), ORIGIN],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        assert proc.stdin is not None
        assert proc.stdout is not None
        # Chrome writes the request as soon as connectNative returns: the pipe holds it.
        proc.stdin.write(struct.pack("<I", len(request)) + request)
        proc.stdin.flush()
        deadline = start + HEALTH_DEADLINE
        fd = proc.stdout.fileno()
        (length,) = struct.unpack("<I", _read_exact(fd, 4, deadline))
        reply = json.loads(_read_exact(fd, length, deadline))
        info_ms = (time.monotonic() - start) * 1000
        if not reply.get("ok"):
            raise RuntimeError(f"handshake failed: {reply}")
        port = reply["payload"]["port"]
        while not _health(port):
            if time.monotonic() > deadline:
                raise TimeoutError("no /health 200 in time")
            time.sleep(0.001)
        health_ms = (time.monotonic() - start) * 1000
    finally:
        if proc.stdin is not None:
            proc.stdin.close()  # EOF: the host stops its daemon and exits
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    return info_ms, health_ms


def bare_python_ms() -> float:
    start = time.monotonic()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return (time.monotonic() - start) * 1000


def measure(runs: int) -> dict[str, list[float]]:
    """Interleaved, so machine load affects the host and the reference alike."""
    out: dict[str, list[float]] = {"info": [], "health": [], "python": []}
    for _ in range(runs):
        base = Path(tempfile.mkdtemp(prefix="jst-coldstart-"))
        try:
            info, health = one_cold_start(base)
        finally:
            shutil.rmtree(base, ignore_errors=True)
        out["info"].append(info)
        out["health"].append(health)
        out["python"].append(bare_python_ms())
    return out


def rows(runs: int) -> list[tuple[str, str, str, str]]:
    m = measure(runs)
    py = statistics.median(m["python"])
    result = []
    for key, name in (("info", "coldstart_to_daemoninfo_ms"), ("health", "coldstart_to_health_ms")):
        value = statistics.median(m[key])
        result.append(
            (
                name,
                f"{value:.0f}",
                "target <= 200",
                f"median of {runs}; `python -c pass` {py:.0f} ms (ratio {value / py:.1f})",
            )
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=7, help="cold starts to time")
    args = parser.parse_args()
    m = measure(args.runs)
    for key, label in (
        ("info", "spawn -> DaemonInfo"),
        ("health", "spawn -> first /health 200"),
        ("python", "python -c pass"),
    ):
        values = " ".join(f"{v:.0f}" for v in m[key])
        print(f"{label:28} median {statistics.median(m[key]):6.1f} ms   ({values})")


if __name__ == "__main__":
    main()
