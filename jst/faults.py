"""Named fault points, for the fault-injection tests only.

``point("rpcinfo.before-rename")`` does nothing unless the environment variable
``JST_FAULT`` arms that point; then the process kills itself with SIGKILL right there,
so that "the host dies between writing the temp file and the rename" is a reproducible
test instead of a race. ``JST_FAULT`` is a comma-separated list of ``name`` (fire the
first time the point is reached) or ``name@n`` (fire the n-th time). It is read once, at
import; without it ``point`` is a dictionary lookup.

Points: ``rpcinfo.after-temp-write``, ``rpcinfo.before-rename``, ``rpcinfo.after-rename``
(store.py), ``host.handshake.before-reply``, ``host.pick.before-save`` (host/main.py),
``link.before-send``, ``link.after-send`` (linkhandler/hosts.py).
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "JST_FAULT"


def _parse(value: str) -> dict[str, int]:
    armed: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, _, nth = item.partition("@")
        armed[name] = int(nth) if nth.isdigit() and int(nth) > 0 else 1
    return armed


_ARMED = _parse(os.environ.get(FAULT_ENV, ""))
_reached: dict[str, int] = {}


def point(name: str) -> None:
    if name not in _ARMED:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] == _ARMED[name]:
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
