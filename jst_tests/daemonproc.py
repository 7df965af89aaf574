"""Running a real jst-io-daemon process for tests, and cleaning it up whatever happens."""

from __future__ import annotations

import base64
import json
import os
import select
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import attrs

DAEMON = [sys.executable, "-m", "jst.daemon.cli"]
ROOT_KEY = "0123456789abcdef"
PORT_LINE_TIMEOUT = 10.0


def write_profile(
    rpc_info: Path,
    install_id: str,
    roots: dict[str, Path],
    extension_id: str | None = None,
    browser_binary: str = "",
) -> None:
    """An ``rpc-info.json`` holding one profile with these roots, as a host leaves it."""
    profile = {
        "extension_id": extension_id,
        "install_id": install_id,
        "pid": os.getpid(),
        "port": 1,
        "token": str(uuid.uuid4()),
        "started": 1,
        "last_used": 1,
        "browser": {"name": "test", "binary": browser_binary, "extension_id": None},
        "download_roots": [
            {
                "key": key,
                "path": str(path),
                "display_name": path.name,
                "removable": False,
                "last_stat_ok": True,
                "last_checked": 1,
            }
            for key, path in roots.items()
        ],
    }
    rpc_info.parent.mkdir(parents=True, exist_ok=True)
    rpc_info.write_text(json.dumps({"version": 1, "profiles": [profile]}))


@attrs.define
class DaemonEnv:
    """A config dir with one profile and one download root, as the host would write it."""

    base: Path
    install_id: str = attrs.field(factory=lambda: str(uuid.uuid4()))
    token: str = attrs.field(factory=lambda: str(uuid.uuid4()))
    extension_id: str = "testextensionidabcdefghijklmnopq"

    @property
    def config_dir(self) -> Path:
        return self.base / "config"

    @property
    def root(self) -> Path:
        return self.base / "root"

    @property
    def rpc_info(self) -> Path:
        return self.config_dir / "jstorrent-native" / "rpc-info.json"

    def write_rpc_info(self, roots: dict[str, Path] | None = None) -> None:
        roots = {ROOT_KEY: self.root} if roots is None else roots
        write_profile(
            self.rpc_info, self.install_id, roots, self.extension_id, browser_binary=sys.executable
        )

    def daemon_args(self) -> list[str]:
        """The arguments the host (and the shared bench) start the daemon with."""
        return ["--port", "0", "--token", self.token, "--install-id", self.install_id]

    def environ(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("JST")}
        env["JSTORRENT_CONFIG_DIR"] = str(self.config_dir)
        env.update(extra)
        return env


@attrs.define
class RunningDaemon:
    proc: subprocess.Popen[bytes]
    port: int
    env: DaemonEnv

    @property
    def auth(self) -> list[tuple[str | bytes, str | bytes]]:
        return [("X-JST-Auth", self.env.token)]


def b64(path: str | bytes) -> str:
    raw = path.encode("utf-8") if isinstance(path, str) else path
    return base64.b64encode(raw).decode()


def read_port_line(proc: subprocess.Popen[bytes], timeout: float = PORT_LINE_TIMEOUT) -> int:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no port line within {timeout} s (got {line!r})")
        ready, _, _ = select.select([proc.stdout], [], [], remaining)
        if ready:
            byte = os.read(proc.stdout.fileno(), 1)
            if not byte:
                raise RuntimeError(f"daemon exited before its port line (got {line!r})")
            line += byte
    return int(line)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """End a daemon this test started (by its PID, via Popen) and reap it."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def spawn(
    env: DaemonEnv,
    args: Sequence[str] | None = None,
    extra_env: dict[str, str] | None = None,
    stdin: int | None = subprocess.DEVNULL,
    command: Sequence[str] = DAEMON,
) -> subprocess.Popen[bytes]:
    argv = [*command, *(env.daemon_args() if args is None else args)]
    return subprocess.Popen(
        argv,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env.environ(**(extra_env or {})),
    )


@contextmanager
def running_daemon(
    env: DaemonEnv, args: Sequence[str] | None = None, extra_env: dict[str, str] | None = None
) -> Iterator[RunningDaemon]:
    proc = spawn(env, args, extra_env)
    try:
        port = read_port_line(proc)
        yield RunningDaemon(proc, port, env)
    finally:
        stop(proc)
