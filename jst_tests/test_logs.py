"""Log files are private and a logged value cannot forge a log line (issue 12, item 10).

Each program's logging is set up once per process, so every case runs in a child
process: the real ``jst.logs.setup`` of a short script, or the real link-handler.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

from jst_tests.hostproc import HostEnv, http, running_host

BIN = Path(sys.executable).parent
LINE_START = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\] ")
FORGED = "[2026-01-01 00:00:00.000] ERROR native-host: forged"


def run_logging(log_file: Path, code: str, **env: str) -> subprocess.CompletedProcess[str]:
    script = (
        "import logging, sys\n"
        "from pathlib import Path\n"
        "from jst import logs\n"
        f"log = logs.setup('test', Path({str(log_file)!r}))\n" + code
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env={**os.environ, **env},
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_log_file_is_0600_in_a_0700_directory(tmp_path: Path) -> None:
    log_file = tmp_path / "app" / "x.log"
    run_logging(log_file, "log.info('hello')\n")
    assert "hello" in log_file.read_text()
    assert mode(log_file) == 0o600
    assert mode(log_file.parent) == 0o700


def test_an_older_world_readable_log_and_directory_are_tightened(tmp_path: Path) -> None:
    directory = tmp_path / "app"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    log_file = directory / "x.log"
    log_file.write_text("[old] line\n")
    log_file.chmod(0o644)
    run_logging(log_file, "log.info('hello')\n")
    assert log_file.read_text().startswith("[old] line\n")  # appended, not replaced
    assert mode(log_file) == 0o600
    assert mode(directory) == 0o700


def test_rotated_files_stay_private_and_bounded(tmp_path: Path) -> None:
    log_file = tmp_path / "app" / "x.log"
    # 3 MiB of messages through a 1 MiB cap with 3 backups.
    run_logging(log_file, "for i in range(3000):\n    log.info('%d %s', i, 'x' * 1000)\n")
    files = sorted(log_file.parent.iterdir())
    assert [f.name for f in files] == ["x.log", "x.log.1", "x.log.2"]
    for f in files:
        assert mode(f) == 0o600
        assert f.stat().st_size <= 1024 * 1024
    assert "2999 " in log_file.read_text()


def test_control_characters_in_values_cannot_forge_a_line(tmp_path: Path) -> None:
    log_file = tmp_path / "app" / "x.log"
    hostile = f"magnet:?xt=urn:btih:{'a' * 40}&dn=x\\n{FORGED}\\r\\x1b[31m\\u2028\\x85end"
    result = run_logging(
        log_file,
        f"value = {hostile!r}.encode().decode('unicode_escape')\n"
        "log.info('magnet: %s', value)\n"
        "try:\n"
        "    raise OSError(2, 'No such file', value)\n"
        "except OSError:\n"
        "    log.exception('cannot open %s', value)\n",
    )
    for text in (log_file.read_text(), result.stderr):
        lines = text.splitlines()
        assert not any(line.startswith(FORGED) for line in lines), text
        # Every line is one of ours or an indented traceback line.
        assert all(LINE_START.match(line) or line.startswith("    ") for line in lines), text
        assert "dn=x\\n[2026-01-01" in text
        assert "\\r\\x1b[31m\\u2028\\x85end" in text
        assert "Traceback" in text  # still there, only indented


def test_a_magnet_given_to_the_link_handler_is_logged_on_one_line(host_env: HostEnv) -> None:
    magnet = f"magnet:?xt=urn:btih:{'b' * 40}&dn=x\n{FORGED}"
    environ = host_env.environ(JST_LINK_HANDLER_DIALOG="0")
    # No host and no browser: it fails after logging the magnet, which is all we need.
    subprocess.run(
        [str(BIN / "jst-link-handler"), magnet],
        capture_output=True,
        env={**environ, "PATH": str(host_env.bin_dir)},
        timeout=60,
        check=False,
    )
    log_file = host_env.rpc_info.parent / "jst-link-handler.log"
    text = log_file.read_text()
    assert "dn=x\\n[2026-01-01" in text
    assert all(LINE_START.match(line) for line in text.splitlines()), text
    assert mode(log_file) == 0o600
    assert mode(log_file.parent) == 0o700


def test_host_and_daemon_logs_are_private(host_env: HostEnv) -> None:
    with running_host(host_env) as host:
        info = host.handshake()
        assert http(info["payload"]["port"], "/health")[0] == 200  # the daemon has logged
        app = host_env.rpc_info.parent
        for name in ("jst-native-host.log", "io-daemon.log"):
            assert (app / name).read_text()
            assert mode(app / name) == 0o600, name
        assert mode(app) == 0o700
