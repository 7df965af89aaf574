"""The desktop's folder dialog and file opener (§2.4.2, §2.4.4), per platform.

Folder picker, chosen at run time, first available wins:

* ``$JST_FOLDER_PICKER``: a command (split like a shell would, never run by one) called
  with two arguments, the dialog title and the initial directory. It prints the chosen
  folder on stdout and exits 0; exit 1 or no output means "cancelled"; anything else is
  an error. This is how tests (and users with an unusual desktop) plug in a picker.
* Linux and other Unix: the xdg-desktop-portal FileChooser (``portal.py``), then
  zenity (GTK), then kdialog (KDE).
* macOS: ``osascript`` ``choose folder``.
* Windows: the shell's folder dialog through PowerShell (``FolderBrowserDialog``).

A dialog must not outlive the host: if the host dies (even by SIGKILL) or the request
is cancelled, the dialog goes too (``guard.py`` on Linux).

Opener: ``xdg-open`` / ``open`` / ``start`` as the original (``revealInFolder`` opens the
parent directory on Linux, which cannot select a file). The original waits for the
opener to exit; some openers only exit when the application they started does. We wait
``OPENER_WAIT`` seconds, which covers every opener that forks, and then report success.
Unlike a dialog, what an opener starts is the user's application (a video player): it
runs in its own session and is *not* ended with the host.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import sys

import trio

log = logging.getLogger("jst.host.desktop")

PICKER_ENV = "JST_FOLDER_PICKER"
TITLE = "Select Download Directory"
# Inside the extension's 10 s timeout for openFile/revealInFolder, with room to spare.
OPENER_WAIT = 5.0


class DesktopError(Exception):
    """A dialog or opener failed; the message is the client's error text."""


def picker_command(title: str, initial: str) -> list[str] | None:
    """The argv of the folder dialog to run here, or ``None`` if there is none."""
    override = os.environ.get(PICKER_ENV)
    if override:
        return [*shlex.split(override), title, initial]
    if sys.platform == "darwin":
        script = (
            f"POSIX path of (choose folder with prompt {applescript_string(title)} "
            f"default location POSIX file {applescript_string(initial)})"
        )
        return ["osascript", "-e", script]
    if sys.platform == "win32":
        ps = (
            "Add-Type -AssemblyName System.Windows.Forms;"
            "$d = New-Object System.Windows.Forms.FolderBrowserDialog;"
            f"$d.Description = {_powershell(title)};"
            f"$d.SelectedPath = {_powershell(initial)};"
            "if ($d.ShowDialog() -eq 'OK') { [Console]::Out.Write($d.SelectedPath) }"
            " else { exit 1 }"
        )
        return ["powershell", "-NoProfile", "-STA", "-Command", ps]
    if shutil.which("zenity"):
        return [
            "zenity", "--file-selection", "--directory",
            f"--title={title}", f"--filename={os.path.join(initial, '')}",
        ]  # fmt: skip
    if shutil.which("kdialog"):
        return ["kdialog", "--getexistingdirectory", initial, "--title", title]
    return None


def applescript_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _powershell(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _portal_first() -> bool:
    return not os.environ.get(PICKER_ENV) and sys.platform not in ("darwin", "win32")


async def pick_folder(initial: str) -> str | None:
    """Show the folder dialog; the chosen folder, or ``None`` if the user cancelled."""
    if _portal_first():
        from jst.host import portal

        try:
            return await portal.pick_folder(TITLE, initial)
        except portal.PortalUnavailable as exc:
            log.info("folder dialog: portal not available (%s); trying zenity/kdialog", exc)
        except portal.PortalFailed as exc:
            raise DesktopError(str(exc)) from exc
    argv = picker_command(TITLE, initial)
    if argv is None:
        raise DesktopError(
            "No folder dialog available: install zenity or kdialog, "
            f"or set {PICKER_ENV} to a picker command"
        )
    if shutil.which(argv[0]) is None:  # else the guard's failure would read as "cancelled"
        raise DesktopError(f"Failed to run {argv[0]}: not found")
    try:
        result = await trio.run_process(
            guarded(argv), stdin=subprocess.DEVNULL, capture_stdout=True, capture_stderr=True,
            check=False,
        )  # fmt: skip
    except OSError as exc:
        raise DesktopError(f"Failed to run {argv[0]}: {exc}") from exc
    chosen = result.stdout.decode("utf-8", "surrogateescape").rstrip("\r\n")
    if result.returncode == 0 and chosen:
        if sys.platform == "darwin" and len(chosen) > 1:
            chosen = chosen.rstrip("/")  # ``POSIX path of`` ends folders with "/"
        return chosen
    if result.returncode in (0, 1):
        return None
    stderr = result.stderr.decode("utf-8", "replace").strip()
    raise DesktopError(f"{argv[0]} failed (exit code {result.returncode}): {stderr}")


GUARD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "guard.py")


def guarded(argv: list[str]) -> list[str]:
    """``argv`` wrapped so that it dies with the host, even a SIGKILLed one (guard.py)."""
    if not hasattr(os, "pidfd_open"):
        return argv
    return [sys.executable, "-I", "-S", GUARD, str(os.getpid()), *argv]


def opener_command(path: str, reveal: bool) -> tuple[str, list[str]]:
    """(name used in error messages, argv) of the platform's opener."""
    if sys.platform == "darwin":
        return ("open -R", ["open", "-R", path]) if reveal else ("open", ["open", path])
    if sys.platform == "win32":
        if reveal:
            return "explorer", ["explorer", f"/select,{path}"]
        return "start", ["cmd", "/C", "start", "", path]
    target = os.path.dirname(path) if reveal else path
    return "xdg-open", ["xdg-open", target]


async def open_path(path: str, reveal: bool, nursery: trio.Nursery) -> None:
    """Open ``path`` (or show its folder); ``DesktopError`` with the original's wording."""
    name, argv = opener_command(path, reveal)
    try:
        proc = await trio.lowlevel.open_process(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=sys.platform != "win32",  # the user's app, not our child
        )
    except OSError as exc:
        raise DesktopError(f"Failed to run {name}: {exc}") from exc
    stderr_chunks: list[bytes] = []
    finished = trio.Event()

    async def reap() -> None:
        # Owned by the host's nursery, so an opener that outlives the request is still
        # waited for (no zombie). If the host exits first it is left running on purpose.
        stderr = proc.stderr
        assert stderr is not None
        try:
            while chunk := await stderr.receive_some(65536):
                if sum(map(len, stderr_chunks)) < 65536:
                    stderr_chunks.append(bytes(chunk))
            await proc.wait()
        finally:
            with trio.CancelScope(shield=True):
                await stderr.aclose()
            finished.set()

    nursery.start_soon(reap)
    with trio.move_on_after(OPENER_WAIT):
        await finished.wait()
    if not finished.is_set() or proc.returncode == 0:
        return
    if sys.platform == "win32" and reveal:
        return  # explorer's exit status means nothing (§2.4.4)
    stderr = b"".join(stderr_chunks).decode("utf-8", "replace").strip()
    if name == "xdg-open":
        raise DesktopError(f"xdg-open failed (exit code Some({proc.returncode})): {stderr}")
    raise DesktopError(f"{name} failed: {stderr}")
