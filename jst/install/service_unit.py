"""``jst install --service``: the login session starts ``jst service run`` (SERVICE.md §1).

Linux: a ``systemd --user`` unit, ``<config>/systemd/user/jst.service`` (the template is
``contrib/systemd/jst.service``), enabled with ``systemctl --user enable --now``.
macOS: a LaunchAgent, ``~/Library/LaunchAgents/com.jstorrent.jst.plist``
(``contrib/launchd/``), loaded with ``launchctl bootstrap``. Windows: a logon task is
not built yet; the one-shot host starts the service on demand there as everywhere.

The unit file goes through the installer's receipt like every other file; uninstall
first stops and disables the unit it finds among the receipt's files, then removes it.
Where ``systemctl --user`` cannot reach a user manager (no login session, a container),
the file is written and the command to enable it is printed instead.
"""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

from jst.install import actions

UNIT_NAME = "jst.service"
AGENT_LABEL = "com.jstorrent.jst"
AGENT_FILE = f"{AGENT_LABEL}.plist"
TEMPLATE_EXEC = "ExecStart=/usr/bin/jst service run"

UNIT_TEMPLATE = """\
# jst service: the persistent JSTorrent io-daemon for this user (SERVICE.md).
# `jst install --service` writes this unit to ~/.config/systemd/user/jst.service, with
# ExecStart pointing at the installed `jst`, and enables it; `jst uninstall` removes it.
# A package may install it to /usr/lib/systemd/user/ with ExecStart=/usr/bin/jst.
[Unit]
Description=JSTorrent native companion (jst service): the persistent io-daemon
After=default.target

[Service]
Type=simple
ExecStart=/usr/bin/jst service run
# An on-demand service (started by the extension) may already run: then this exits 0.
Restart=on-failure
RestartSec=2
# SIGTERM ends the service and its io-daemons within 2 s.
TimeoutStopSec=5

[Install]
WantedBy=default.target
"""

Say = Callable[[str], None]


def unit_path(opts: actions.Options) -> Path:
    return actions.config_home(opts.home) / "systemd" / "user" / UNIT_NAME


def agent_path(opts: actions.Options) -> Path:
    return opts.home / "Library" / "LaunchAgents" / AGENT_FILE


def render_unit(jst: str) -> str:
    quoted = jst if " " not in jst else f'"{jst}"'
    return UNIT_TEMPLATE.replace(TEMPLATE_EXEC, f"ExecStart={quoted} service run")


def render_agent(jst: str) -> bytes:
    doc = {
        "Label": AGENT_LABEL,
        "ProgramArguments": [jst, "service", "run"],
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ProcessType": "Background",
    }
    return plistlib.dumps(doc)


def writes(opts: actions.Options) -> list[actions.FileWrite]:
    if opts.system:
        raise actions.InstallError("--service installs a per-user service; drop --system")
    jst = str(actions.executable("jst"))
    if opts.platform.startswith("linux"):
        content = render_unit(jst).encode()
        return [actions.FileWrite(unit_path(opts), content, 0o644, "systemd user unit")]
    if opts.platform == "darwin":
        return [actions.FileWrite(agent_path(opts), render_agent(jst), 0o644, "LaunchAgent")]
    raise actions.InstallError("--service is not built for this platform yet")


def _run(argv: list[str]) -> tuple[bool, str]:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, str(exc)
    return result.returncode == 0, (result.stderr or result.stdout).strip()


def enable(opts: actions.Options, say: Say) -> None:
    if opts.dry_run:
        say("would enable the jst service")
        return
    if opts.platform.startswith("linux"):
        systemctl = shutil.which("systemctl")
        command = ["systemctl", "--user", "enable", "--now", UNIT_NAME]
        if systemctl is not None:
            _run([systemctl, "--user", "daemon-reload"])
            ok, detail = _run([systemctl, *command[1:]])
            if ok:
                say(f"enabled    {UNIT_NAME} (systemd --user)")
                return
            say(f"WARNING: {' '.join(command)} failed: {detail}")
        say(f"to start it at login, run: {' '.join(command)}")
    elif opts.platform == "darwin":
        ok, detail = _run(["launchctl", "bootstrap", f"gui/{os.getuid()}", str(agent_path(opts))])
        say(f"loaded     {AGENT_LABEL}" if ok else f"WARNING: launchctl bootstrap: {detail}")


def disable(files: Iterable[str], opts: actions.Options, say: Say) -> None:
    """Stop and disable the unit or agent among ``files`` (a receipt's) before removal."""
    for path_text in files:
        path = Path(path_text)
        if path.name == UNIT_NAME and path.parent.name == "user":
            systemctl = shutil.which("systemctl")
            if opts.dry_run:
                say(f"would disable {UNIT_NAME}")
            elif systemctl is not None:
                ok, _detail = _run([systemctl, "--user", "disable", "--now", UNIT_NAME])
                if ok:
                    say(f"disabled   {UNIT_NAME}")
        elif path.name == AGENT_FILE and not opts.dry_run:
            _run(["launchctl", "bootout", f"gui/{os.getuid()}/{AGENT_LABEL}"])


def installed(opts: actions.Options) -> Path | None:
    for path in (unit_path(opts), agent_path(opts)):
        if path.is_file():
            return path
    return None
