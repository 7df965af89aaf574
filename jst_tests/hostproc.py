"""Driving a real jst-native-host process exactly as Chrome does, for tests.

Chrome starts the host with the caller's origin as argv[1], writes length-prefixed JSON
to its stdin and reads frames from its stdout. ``HostProcess`` does the same; a reader
thread splits stdout into frames so a test can wait for "the next frame" with a bound.
Every process the host started (the daemon, openers) is found through psutil and killed
at cleanup, even when the test failed.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import attrs
import psutil

from jst.host import control_server

HOST = [sys.executable, "-m", "jst.host.cli"]
EXTENSION_ID = "abcdefghijklmnopabcdefghijklmnop"
ORIGIN = f"chrome-extension://{EXTENSION_ID}/"
FRAME_TIMEOUT = 15.0


class NoFrame(AssertionError):
    pass


@attrs.define
class HostEnv:
    """A temporary config dir, a fake PATH for openers, and a scripted folder picker."""

    base: Path
    install_id: str = attrs.field(factory=lambda: str(uuid.uuid4()))

    @property
    def config_dir(self) -> Path:
        return self.base / "config"

    @property
    def rpc_info(self) -> Path:
        return self.config_dir / "jstorrent-native" / "rpc-info.json"

    @property
    def bin_dir(self) -> Path:
        return self.base / "bin"

    @property
    def opener_log(self) -> Path:
        return self.base / "opener.log"

    @property
    def picker_answer(self) -> Path:
        """Write a folder path here and the fake picker "chooses" it; absent = cancel."""
        return self.base / "picker-answer"

    def setup(self) -> None:
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        # A fake xdg-open: records its argv, exits with $FAKE_OPENER_STATUS.
        opener = self.bin_dir / "xdg-open"
        opener.write_text(
            "#!/bin/sh\n"
            f'printf "%s\\n" "$*" >> "{self.opener_log}"\n'
            'if [ -n "$FAKE_OPENER_STATUS" ]; then echo "no handler" >&2;'
            ' exit "$FAKE_OPENER_STATUS"; fi\n'
        )
        opener.chmod(0o755)
        picker = self.bin_dir / "fake-picker"
        picker.write_text(
            "#!/bin/sh\n"
            f'printf "%s|%s\\n" "$1" "$2" >> "{self.base / "picker.log"}"\n'
            f'[ -f "{self.picker_answer}" ] || exit 1\n'
            f'cat "{self.picker_answer}"\n'
        )
        picker.chmod(0o755)

    def environ(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JST", "JSTORRENT"))}
        env["JSTORRENT_CONFIG_DIR"] = str(self.config_dir)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        env["JST_FOLDER_PICKER"] = str(self.bin_dir / "fake-picker")
        env.pop("FAKE_OPENER_STATUS", None)
        env.update(extra)
        return env

    def profiles(self) -> list[dict[str, Any]]:
        doc = json.loads(self.rpc_info.read_text())
        profiles: list[dict[str, Any]] = doc["profiles"]
        return profiles

    def wait_for_profile(self, pid: int, timeout: float = 10.0) -> dict[str, Any]:
        """The rpc-info.json profile of host ``pid``, once that host has written it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.rpc_info.exists():
                for profile in self.profiles():
                    if profile["pid"] == pid:
                        return profile
            time.sleep(0.02)
        raise AssertionError(f"host pid {pid} never wrote its profile")


class HostProcess:
    # Descriptors the host inherits besides its stdio, as from a careless launcher.
    inherited_fds: tuple[int, ...] = ()

    def __init__(self, env: HostEnv, argv: list[str] | None = None, **extra_env: str) -> None:
        self.env = env
        self.proc = subprocess.Popen(
            [*HOST, *(argv if argv is not None else [ORIGIN])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env.environ(**extra_env),
            pass_fds=self.inherited_fds,
        )
        self.frames: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.stderr_lines: list[str] = []
        self.descendants: set[int] = set()
        threading.Thread(target=self._read_frames, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_frames(self) -> None:
        out = self.proc.stdout
        assert out is not None
        while True:
            head = out.read(4)
            if len(head) < 4:
                self.frames.put(None)
                return
            (length,) = struct.unpack("<I", head)
            self.frames.put(json.loads(out.read(length)))

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line.decode("utf-8", "replace"))

    def send_raw(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, message: dict[str, Any]) -> str:
        message.setdefault("id", str(uuid.uuid4()))
        body = json.dumps(message).encode()
        self.send_raw(struct.pack("<I", len(body)) + body)
        return str(message["id"])

    def recv(self, timeout: float = FRAME_TIMEOUT) -> dict[str, Any]:
        try:
            frame = self.frames.get(timeout=timeout)
        except queue.Empty:
            raise NoFrame(f"no frame within {timeout} s; host log:\n{self.log()}") from None
        if frame is None:
            raise NoFrame(f"host closed stdout; log:\n{self.log()}")
        return frame

    def no_frame_within(self, seconds: float) -> bool:
        try:
            self.frames.get(timeout=seconds)
        except queue.Empty:
            return True
        return False

    def request(self, message: dict[str, Any], timeout: float = FRAME_TIMEOUT) -> dict[str, Any]:
        request_id = self.send(message)
        frame = self.recv(timeout)
        assert frame.get("id") == request_id, f"expected the reply to {request_id}, got {frame}"
        return frame

    def handshake(self, install_id: str | None = None) -> dict[str, Any]:
        reply = self.request(
            {
                "op": "handshake",
                "extensionId": EXTENSION_ID,
                "installId": install_id or self.env.install_id,
            }
        )
        assert reply["ok"], reply
        assert reply["type"] == "DaemonInfo"
        self.note_children()
        return reply

    def note_children(self) -> None:
        try:
            for child in psutil.Process(self.pid).children(recursive=True):
                self.descendants.add(child.pid)
        except psutil.Error:
            pass

    def daemon_pid(self, timeout: float = 5.0) -> int:
        """The one daemon child. A child seen between its fork and its exec still has
        the host's command line, so a (re)start in progress is waited for, briefly."""
        deadline = time.monotonic() + timeout
        while True:
            children = []
            for child in psutil.Process(self.pid).children():
                with suppress(psutil.Error):
                    cmdline = " ".join(child.cmdline())
                    if "jst.daemon" in cmdline or "io-daemon" in cmdline:
                        children.append(child)
            if len(children) == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert len(children) == 1, children
        self.descendants.add(children[0].pid)
        return children[0].pid

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def log(self) -> str:
        return "".join(self.stderr_lines[-60:])

    def cleanup(self) -> None:
        self.note_children()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pid in self.descendants:
            kill_if_alive(pid)
        # A killed host leaves its control directory; remove what this test's host made.
        for base in {control_server.base_dir(), "/tmp"}:
            for leftover in Path(base).glob(f"{control_server.DIR_PREFIX}{self.pid}-*"):
                shutil.rmtree(leftover, ignore_errors=True)


def kill_if_alive(pid: int) -> None:
    with suppress(psutil.Error):
        psutil.Process(pid).kill()


def gone_within(pid: int, seconds: float) -> bool:
    """True if process ``pid`` no longer runs (or is a zombie) within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


@contextmanager
def running_host(
    env: HostEnv, argv: list[str] | None = None, **extra: str
) -> Iterator[HostProcess]:
    host = HostProcess(env, argv, **extra)
    try:
        yield host
    finally:
        host.cleanup()


def http(
    port: int,
    path: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, bytes]:
    """One loopback HTTP request; (status, body) for every status, errors included."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=body, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (loopback)
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
