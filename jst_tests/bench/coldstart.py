"""Cold start, as the extension feels it (issue 17), beside the bare interpreter start.

Each run: a fresh config directory, ``jst-native-host`` spawned with the caller's origin
as Chrome does, a ``handshake`` frame, then ``GET /health`` on the returned port until it
answers 200. Timed from just before the spawn to the ``DaemonInfo`` frame and to the
first 200. The reference is ``python -c pass`` with the same interpreter, measured in the
same run: no Python program can answer sooner than that. Loopback only.

The generated-code cache (``jst/codecache.py``, in the user's cache directory) is what
every start after the first finds: one untimed start fills it, and each timed start is
paired with one under ``JST_CODE_CACHE=0``, the cost of the first start after an install.

The persistent mode (SERVICE.md): ``jst service run`` in its own config and runtime
directories, one warm-up request (the service starts that install's daemon), then
``jst-native-host`` spawned as ``chrome.runtime.sendNativeMessage`` does (one
``get_browser_endpoint`` frame, stdin closed), timed from the spawn to its one reply.

Run alone: ``python -m jst_tests.bench.coldstart [--runs N]``.
"""

from __future__ import annotations

import argparse
import contextlib
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


@contextlib.contextmanager
def spawned_host(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """``jst-native-host`` as the browser starts it; at the end its stdin is closed (EOF:
    the host stops its daemon and exits) and it is waited for, killed if it lingers."""
    proc = subprocess.Popen(
        [*host_command(), ORIGIN],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        yield proc
    finally:
        if proc.stdin is not None and not proc.stdin.closed:
            proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def exchange(proc: subprocess.Popen[bytes], request: bytes, start: float, *, eof: bool) -> Any:
    """Write one Native Messaging frame (then EOF if ``eof``, as ``sendNativeMessage``
    does) and read the one reply frame."""
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write(struct.pack("<I", len(request)) + request)
    if eof:
        proc.stdin.close()
    else:
        proc.stdin.flush()  # Chrome writes the request as soon as connectNative returns
    deadline = start + HEALTH_DEADLINE
    fd = proc.stdout.fileno()
    (length,) = struct.unpack("<I", _read_exact(fd, 4, deadline))
    return json.loads(_read_exact(fd, length, deadline))


def one_cold_start(base: Path, *, code_cache: bool = True) -> tuple[float, float]:
    """(ms to DaemonInfo, ms to first /health 200) for one host in a fresh config dir;
    without ``code_cache``, attrs' classes are compiled as at the first start after an
    install (jst/codecache.py)."""
    env = config_environ(base)
    if not code_cache:
        env["JST_CODE_CACHE"] = "0"
    request = json.dumps(
        {
            "op": "handshake",
            "extensionId": EXTENSION_ID,
            "installId": str(uuid.uuid4()),
            "id": str(uuid.uuid4()),
        }
    ).encode()
    start = time.monotonic()
    with spawned_host(env) as proc:
        reply = exchange(proc, request, start, eof=False)
        info_ms = (time.monotonic() - start) * 1000
        if not reply.get("ok"):
            raise RuntimeError(f"handshake failed: {reply}")
        port = reply["payload"]["port"]
        while not _health(port):
            if time.monotonic() > start + HEALTH_DEADLINE:
                raise TimeoutError("no /health 200 in time")
            time.sleep(0.001)
        health_ms = (time.monotonic() - start) * 1000
    return info_ms, health_ms


def config_environ(base: Path) -> dict[str, str]:
    """Our environment without jst's variables, with a config dir of its own in ``base``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JST", "JSTORRENT"))}
    env["JSTORRENT_CONFIG_DIR"] = str(base / "config")
    return env


def _environ(base: Path) -> dict[str, str]:
    env = config_environ(base)
    env["XDG_RUNTIME_DIR"] = str(base / "run")  # service.sock: short, and ours alone
    return env


def jst_command() -> list[str]:
    script = Path(sys.executable).with_name("jst")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "jst.cli"]


def _service_status(env: dict[str, str]) -> bool:
    sock_path = Path(env["XDG_RUNTIME_DIR"]) / "jstorrent-native" / "service.sock"
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(1.0)
            sock.connect(str(sock_path))
            sock.sendall(b'{"op": "status"}\n')
            return b'"pid"' in sock.recv(65536)
    except OSError:
        return False


def one_shot_ms(env: dict[str, str], install_id: str) -> float:
    """Spawn -> the one reply of a one-shot ``get_browser_endpoint`` host."""
    request = json.dumps({"type": "get_browser_endpoint", "installId": install_id}).encode()
    start = time.monotonic()
    with spawned_host(env) as proc:
        reply = exchange(proc, request, start, eof=True)
        elapsed = (time.monotonic() - start) * 1000
        if "port" not in reply:
            raise RuntimeError(f"one-shot failed: {reply}")
    return elapsed


def measure_one_shot(runs: int) -> dict[str, list[float]]:
    """With ``jst service run`` up and the install's daemon started (one warm-up
    request): spawn -> reply, interleaved with ``python -c pass``."""
    out: dict[str, list[float]] = {"oneshot": [], "python": []}
    base = Path(tempfile.mkdtemp(prefix="jst-oneshot-", dir="/tmp"))
    env = _environ(base)
    Path(env["XDG_RUNTIME_DIR"]).mkdir(mode=0o700)
    install_id = str(uuid.uuid4())
    service = subprocess.Popen(
        [*jst_command(), "service", "run"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        deadline = time.monotonic() + HEALTH_DEADLINE
        while not _service_status(env):
            if service.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("jst service run did not come up")
            time.sleep(0.02)
        one_shot_ms(env, install_id)  # warm-up: the service starts this install's daemon
        for _ in range(runs):
            out["oneshot"].append(one_shot_ms(env, install_id))
            out["python"].append(bare_python_ms())
    finally:
        service.terminate()  # its daemons stop with it (SERVICE.md: within 2 s)
        try:
            service.wait(timeout=10)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
        shutil.rmtree(base, ignore_errors=True)
    return out


def bare_python_ms() -> float:
    start = time.monotonic()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return (time.monotonic() - start) * 1000


def cold_start_in_temp_dir(*, code_cache: bool = True) -> tuple[float, float]:
    base = Path(tempfile.mkdtemp(prefix="jst-coldstart-"))
    try:
        return one_cold_start(base, code_cache=code_cache)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def measure(runs: int) -> dict[str, list[float]]:
    """Interleaved, so machine load affects the host and the reference alike. One start
    first, untimed: it leaves the code cache as every start after an install finds it."""
    out: dict[str, list[float]] = {"info": [], "health": [], "nocache": [], "python": []}
    cold_start_in_temp_dir()
    for _ in range(runs):
        info, health = cold_start_in_temp_dir()
        out["info"].append(info)
        out["health"].append(health)
        out["nocache"].append(cold_start_in_temp_dir(code_cache=False)[1])
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
    value = statistics.median(m["nocache"])
    result.append(
        (
            "coldstart_to_health_no_code_cache_ms",
            f"{value:.0f}",
            "",
            f"JST_CODE_CACHE=0, as the first start after an install; median of {runs}",
        )
    )
    o = measure_one_shot(runs)
    value, py = statistics.median(o["oneshot"]), statistics.median(o["python"])
    result.append(
        (
            "oneshot_get_browser_endpoint_ms",
            f"{value:.0f}",
            "target <= 60",
            f"service running; median of {runs}; `python -c pass` {py:.0f} ms "
            f"(ratio {value / py:.1f})",
        )
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=7, help="cold starts to time")
    parser.add_argument("--no-service", action="store_true", help="skip the one-shot runs")
    args = parser.parse_args()
    m = measure(args.runs)
    lines = [
        ("spawn -> DaemonInfo", m["info"]),
        ("spawn -> first /health 200", m["health"]),
        ("  the same, no code cache", m["nocache"]),
        ("python -c pass", m["python"]),
    ]
    if not args.no_service:
        o = measure_one_shot(args.runs)
        lines += [("one-shot spawn -> reply", o["oneshot"]), ("python -c pass", o["python"])]
    for label, values in lines:
        each = " ".join(f"{v:.0f}" for v in values)
        print(f"{label:28} median {statistics.median(values):6.1f} ms   ({each})")


if __name__ == "__main__":
    main()
