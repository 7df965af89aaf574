"""Run a command that must not outlive the native-host (Linux), e.g. a folder dialog.

    python -I -S guard.py <host pid> <command> [args...]

A child of the host survives the host's SIGKILL: nothing kills it, and a zenity dialog
would stay on screen with no one to answer. This guard, run by the host in place of the
command, starts the command in its own process group and waits for whichever comes
first (pidfds, no polling):

* the command exits → the guard exits with its status (128+n for a signal n);
* the host dies → the guard ends the command's group (SIGTERM, SIGKILL after 1 s) and
  exits 1;
* the guard gets SIGTERM (the host cancelled the request) → the same, then exit 1.

It is a standalone stdlib script (``-S``: no site import, ~15 ms to start) so that it
does not depend on the environment the host runs in. stdin/stdout/stderr pass through.
Elsewhere (no pidfd) the host runs commands directly.
"""

import contextlib
import os
import select
import signal
import subprocess
import sys
import time

KILL_AFTER = 1.0


def _end(group: int) -> None:
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + KILL_AFTER
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)


def main() -> int:
    host_pid, argv = int(sys.argv[1]), sys.argv[2:]
    try:
        host = os.pidfd_open(host_pid)
    except ProcessLookupError:
        return 1
    child = subprocess.Popen(argv, start_new_session=True)

    def on_term(_signum: int, _frame: object) -> None:
        _end(child.pid)
        child.wait()
        os._exit(1)

    signal.signal(signal.SIGTERM, on_term)
    poller = select.poll()
    child_fd = os.pidfd_open(child.pid)
    poller.register(host, select.POLLIN)
    poller.register(child_fd, select.POLLIN)
    while True:
        ready = {fd for fd, _event in poller.poll()}
        if child_fd in ready:
            status = child.wait()
            return status if status >= 0 else 128 - status
        if host in ready:
            _end(child.pid)
            child.wait()
            return 1


if __name__ == "__main__":
    sys.exit(main())
