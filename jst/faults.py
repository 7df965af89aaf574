"""Named fault points, for the fault-injection tests only.

``point("rpcinfo.before-rename")`` does nothing unless the environment variable
``JST_FAULT`` arms that point; then the process kills itself with SIGKILL right there,
so that "the host dies between writing the temp file and the rename" is a reproducible
test instead of a race. ``JST_FAULT`` is a comma-separated list of ``name`` (fire the
first time the point is reached) or ``name@n`` (fire the n-th time), each optionally
followed by ``=stop`` to SIGSTOP instead of SIGKILL (a process frozen mid-step, as under
a debugger or a suspended laptop). It is read once, at import; without it ``point`` is a
dictionary lookup.

Points: ``rpcinfo.after-temp-write``, ``rpcinfo.before-rename``, ``rpcinfo.after-rename``
(store.py), ``host.handshake.before-reply``, ``host.pick.before-save`` (host/main.py),
``link.before-send``, ``link.after-send`` (linkhandler/hosts.py).
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "JST_FAULT"


def _parse(value: str) -> dict[str, tuple[int, str]]:
    armed: dict[str, tuple[int, str]] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        spec, _, action = item.partition("=")
        name, _, nth = spec.partition("@")
        armed[name] = (int(nth) if nth.isdigit() and int(nth) > 0 else 1, action or "kill")
    return armed


_ARMED = _parse(os.environ.get(FAULT_ENV, ""))
_reached: dict[str, int] = {}


def point(name: str) -> None:
    if name not in _ARMED:
        return
    _reached[name] = _reached.get(name, 0) + 1
    nth, action = _ARMED[name]
    if _reached[name] == nth:
        if action == "stop" and hasattr(signal, "SIGSTOP"):
            os.kill(os.getpid(), signal.SIGSTOP)
        else:
            os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
