"""Waiting for the parent process to die (``--parent-pid``, §5.2), per platform.

The original polls ``kill(pid, 0)`` every second. On Linux we wait on a pidfd instead:
it wakes us the moment the parent exits, and (unlike ``kill(pid, 0)``) it also sees a
parent that died but was not reaped yet (a zombie still answers ``kill(pid, 0)``).
Elsewhere we poll, 5x per second, to keep the promise "gone within 1 s".
"""

from __future__ import annotations

import errno
import os
import sys

import trio

POLL_INTERVAL = 0.2


class ParentCheckError(Exception):
    """The parent's liveness cannot be checked at all (the daemon exits with status 1)."""


def _alive(pid: int) -> bool:
    if sys.platform == "win32":
        import psutil

        return bool(psutil.pid_exists(pid))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError as exc:
        raise ParentCheckError(str(exc)) from exc
    return True


async def wait_for_exit(pid: int) -> None:
    """Return once process ``pid`` has exited (at once if it does not exist)."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is not None:
        try:
            pidfd = pidfd_open(pid)
        except ProcessLookupError:
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOSYS, errno.EPERM, errno.EINVAL):
                raise ParentCheckError(str(exc)) from exc
        else:
            try:
                await trio.lowlevel.wait_readable(pidfd)
            finally:
                os.close(pidfd)
            return
    watch_ppid = pid == os.getppid() if sys.platform != "win32" else False
    # Polling is the only portable way here (no pidfd); an Event has no one to set it.
    while _alive(pid) and not (watch_ppid and os.getppid() != pid):  # noqa: ASYNC110
        await trio.sleep(POLL_INTERVAL)
