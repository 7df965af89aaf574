"""Named fault points, for the fault-injection tests only.

``point("rpcinfo.before-rename")`` does nothing unless the environment variable
``JST_FAULT`` names that point; then the process kills itself with SIGKILL right there,
so that "the host dies between writing the temp file and the rename" is a reproducible
test instead of a race. ``JST_FAULT`` is read once, at import.
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "JST_FAULT"
_ARMED = frozenset(filter(None, os.environ.get(FAULT_ENV, "").split(",")))


def point(name: str) -> None:
    if name in _ARMED:
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
