"""``jst doctor``: is jst reachable from each browser, and if not, what to do.

For every browser in use here (and every manifest found): the manifest exists, is valid
JSON with an absolute, executable ``path`` and the right origins; the host starts the way
Chrome starts it (the origin as argument, an empty environment, a stdin pipe, its own
directory as working directory) and answers a handshake within 2 s; the daemon it
starts answers ``/health``. Then, on Linux, whether magnet links and .torrent files open
with jst. The host check uses a throwaway config directory, so it never touches the
user's ``rpc-info.json``.

Every failure comes with the fix. The exit status is 1 when anything failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any, TextIO

import attrs

from jst.host import nm
from jst.install import actions, manifest, xdg
from jst.install.browsers import Layout

HANDSHAKE_TIMEOUT = 2.0
OK, FAIL, WARN = "ok", "FAIL", "warn"


@attrs.frozen
class Row:
    check: str
    status: str
    detail: str
    fix: str = ""


def _read_exactly(proc: subprocess.Popen[bytes], n: int, deadline: float) -> bytes:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    data = b""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while len(data) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not sel.select(remaining):
                raise TimeoutError
            chunk = os.read(fd, n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
    return data


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    if sys.platform == "win32":
        proc.kill()
    else:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def host_check(path: str) -> tuple[bool, str]:
    """Start ``path`` as Chrome would and handshake; (ok, what happened)."""
    config_dir = tempfile.mkdtemp(prefix="jst-doctor-")
    request = nm.encode_frame(
        {"op": "handshake", "extensionId": manifest.EXTENSION_IDS[0],
         "installId": "jst-doctor", "id": "doctor"}
    )  # fmt: skip
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            [path, manifest.origin(manifest.EXTENSION_IDS[0])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={"JSTORRENT_CONFIG_DIR": config_dir},
            cwd=os.path.dirname(path) or None,
            # Its own process group, so a broken host and whatever it started can be
            # ended together (a wrapper script's children would otherwise linger).
            start_new_session=sys.platform != "win32",
        )
    except OSError as exc:
        shutil.rmtree(config_dir, ignore_errors=True)
        return False, f"cannot start it: {exc}"
    try:
        assert proc.stdin is not None
        try:
            proc.stdin.write(request)
            proc.stdin.flush()
        except BrokenPipeError:
            # It closed its stdin before reading anything: it crashed at once (its exit
            # status says more, once it has one).
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)
            raise EOFError from None
        deadline = started + HANDSHAKE_TIMEOUT
        (length,) = nm.HEADER.unpack(_read_exactly(proc, nm.HEADER.size, deadline))
        if length > nm.MAX_OUTBOUND:  # Chrome would drop such a frame too
            return False, f"wrote {length:#x} as a frame length: something else is on its stdout"
        reply: dict[str, Any] = json.loads(_read_exactly(proc, length, deadline))
        elapsed = int((time.monotonic() - started) * 1000)
        if reply.get("type") != "DaemonInfo":
            return False, f"handshake failed: {reply.get('error', reply)}"
        port = reply["payload"]["port"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
            healthy = resp.status == 200
        if not healthy:
            return False, f"handshake ok, but the io-daemon on port {port} is not healthy"
        return True, f"handshake in {elapsed} ms; io-daemon answers on port {port}"
    except TimeoutError:
        return False, f"no answer to a handshake within {HANDSHAKE_TIMEOUT:g} s"
    except EOFError:
        return False, f"it exited without answering (status {proc.poll()})"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return False, f"bad answer: {exc}"
    finally:
        if proc.stdin is not None:
            # a host that crashed has closed its end: flushing into it must not
            # turn doctor's report into a traceback
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
        if proc.returncode is not None and sys.platform != "win32":
            _kill_group(proc)  # leftovers of a host that exited but left children
        shutil.rmtree(config_dir, ignore_errors=True)


def _layout_rows(layout: Layout, host_results: dict[str, tuple[bool, str]]) -> list[Row]:
    path = layout.manifest_dir / manifest.FILE_NAME
    label = layout.name
    install = (
        f"jst install --browser {layout.key}"
        if layout.key != "user-data-dir"
        else (f"jst install --user-data-dir {layout.presence}")
    )
    if not path.exists():
        return [Row(f"{label}: manifest", FAIL, f"missing: {path}", f"run `{install}`")]
    try:
        data = path.read_bytes()
    except OSError as exc:
        return [Row(f"{label}: manifest", FAIL, f"unreadable: {exc}", f"run `{install}`")]
    problems = manifest.problems(data, layout.kind)
    if problems:
        return [Row(f"{label}: manifest", FAIL, f"{path}: " + "; ".join(problems),
                    f"run `{install}` to rewrite it")]  # fmt: skip
    rows = [Row(f"{label}: manifest", OK, str(path))]
    if layout.sandbox_note:
        rows.append(Row(f"{label}: sandbox", WARN, layout.sandbox_note))
        return rows  # the wrapper only works inside the sandbox
    host_path = json.loads(data)["path"]
    if host_path not in host_results:
        host_results[host_path] = host_check(host_path)
    ok, detail = host_results[host_path]
    fix = "" if ok else "run `jst install` again; see the host log in <config>/jstorrent-native/"
    rows.append(Row(f"{label}: host starts", OK if ok else FAIL, detail, fix))
    return rows


def _handler_rows(opts: actions.Options) -> list[Row]:
    rows: list[Row] = []
    xdg_mime = shutil.which("xdg-mime")
    mimeapps = actions.config_home(opts.home) / "mimeapps.list"
    for mime in xdg.MIME_TYPES:
        if xdg_mime is not None:
            result = subprocess.run(
                [xdg_mime, "query", "default", mime], capture_output=True, check=False
            )
            current: str | None = result.stdout.decode().strip() or None
        else:
            text = mimeapps.read_text("utf-8") if mimeapps.exists() else ""
            current = xdg.default_for(text, mime)
        if current == xdg.DESKTOP_ID:
            rows.append(Row(f"handler: {mime}", OK, xdg.DESKTOP_ID))
        else:
            rows.append(Row(f"handler: {mime}", FAIL, f"opens with {current or 'nothing'}",
                            "run `jst install`"))  # fmt: skip
    return rows


def _service_rows(opts: actions.Options) -> list[Row]:
    """The persistent mode (SERVICE.md): optional, so only a broken setup fails."""
    from jst.install import service_unit
    from jst.service import client, paths

    unit = service_unit.installed(opts)
    try:
        status: dict[str, Any] | None = client.request({"op": "status"}, timeout=2.0)
    except (client.ServiceUnreachable, client.ServiceError, paths.RuntimeDirError):
        status = None
    if status is not None:
        daemons = status.get("installs") or []
        detail = f"running, pid {status.get('pid')}, {len(daemons)} io-daemon(s)"
        return [Row("service", OK, detail + (f"; unit {unit}" if unit else "; no unit"))]
    if unit is not None:
        fix = "systemctl --user start jst.service (or `jst service start`); see jst-service.log"
        return [Row("service", FAIL, f"unit {unit} installed, service not reachable", fix)]
    return [Row("service", OK, "not installed (optional: `jst install --service`)")]


def diagnose(opts: actions.Options) -> list[Row]:
    layouts = actions.layouts_for(opts)
    # Manifests left in browsers that look unused are checked too.
    for layout in actions.layouts_for(opts, everything=True):
        if layout not in layouts and (layout.manifest_dir / manifest.FILE_NAME).exists():
            layouts.append(layout)
    rows: list[Row] = []
    if not layouts:
        fix = "start your browser once, then `jst install` (or `jst install --browser chrome`)"
        rows.append(Row("browsers", FAIL, f"no supported browser found under {opts.home}", fix))
    host_results: dict[str, tuple[bool, str]] = {}
    for layout in layouts:
        rows += _layout_rows(layout, host_results)
    if opts.platform.startswith("linux") and not opts.system:
        rows += _handler_rows(opts)
    if not opts.system:
        rows += _service_rows(opts)
    if hasattr(os, "geteuid") and os.geteuid() == 0 and not opts.system:
        detail = "running as root: other users' browsers do not read root's manifests"
        rows.append(Row("user", WARN, detail, "run jst as the user who runs the browser"))
    return rows


def print_table(rows: list[Row], out: TextIO) -> None:
    width = max((len(r.check) for r in rows), default=5)
    for r in rows:
        print(f"{r.status:<4}  {r.check:<{width}}  {r.detail}", file=out)
        if r.fix:
            print(f"{'':<4}  {'':<{width}}  fix: {r.fix}", file=out)


def run(opts: actions.Options, out: TextIO = sys.stdout) -> int:
    rows = diagnose(opts)
    print_table(rows, out)
    return 1 if any(r.status == FAIL for r in rows) else 0
