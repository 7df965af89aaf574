"""``import trio`` without its slowest step, for the programs whose start is timed.

When imported, trio looks up ``pthread_setname_np`` to name its worker threads, and
finds the library with ``ctypes.util.find_library("pthread")``, which on Linux runs
``/sbin/ldconfig -p`` in a child process and parses its output: 10-15 ms, the single
slowest step of ``import trio``, paid by the host and by the daemon at every cold start
(issue 17). On Linux the answer is fixed: glibc's soname has been ``libpthread.so.0``
for decades (since 2.34 a stub that still resolves the symbol); on musl that name does
not load, trio's ``CDLL`` call fails, and it simply leaves its threads unnamed, which
is also what happens there today.

Importing ``ctypes.util`` itself costs a few ms more (it imports ``shutil``,
``tempfile``, ``bz2`` and ``lzma``, none of which a cold start needs), so while trio is
imported ``ctypes.util`` is a stand-in module whose ``find_library`` answers that one
question, and loads the real module for any other; it is removed as soon as trio is
imported, so a later ``import ctypes.util`` gets the real one.

``ssl`` and ``idna`` (~6 ms together) are imported by trio's modules for TLS streams
and for non-ASCII host names, neither of which a cold start uses, and those modules
read nothing from them at import. So while trio imports, each is a stand-in module
that imports the real one on its first attribute read and forwards to it from then on;
once trio is imported the stand-ins leave ``sys.modules``, and the next ``import ssl``
(the daemon's TLS sockets, say) loads the real module as usual.
"""

from __future__ import annotations

import importlib
import sys
import threading
import types
from typing import Any

PTHREAD_SONAME = "libpthread.so.0"
DEFERRED = ("ssl", "idna")


class _Deferred(types.ModuleType):
    """Stands in for a module trio imports but a cold start never uses."""

    _lock = threading.Lock()

    def __getattr__(self, attr: str) -> Any:
        with self._lock:
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]  # still importing trio: load the real one
            real = importlib.import_module(self.__name__)
            self.__dict__.update(real.__dict__)
        return getattr(real, attr)


def _defer() -> list[_Deferred]:
    stand_ins = [_Deferred(name) for name in DEFERRED if name not in sys.modules]
    for stand_in in stand_ins:
        sys.modules[stand_in.__name__] = stand_in
    return stand_ins


def _undefer(stand_ins: list[_Deferred]) -> None:
    for stand_in in stand_ins:
        if sys.modules.get(stand_in.__name__) is stand_in:
            del sys.modules[stand_in.__name__]


def import_trio() -> None:
    if "trio" in sys.modules or not sys.platform.startswith("linux"):
        import trio

        return
    import ctypes

    if "ctypes.util" in sys.modules:
        _import_trio_patched(sys.modules["ctypes.util"])
        return
    stand_in = types.ModuleType("ctypes.util")

    def find_library(name: str) -> str | None:
        if name == "pthread":
            return PTHREAD_SONAME
        _remove(stand_in)
        import ctypes.util

        return ctypes.util.find_library(name)

    stand_in.find_library = find_library  # type: ignore[attr-defined]
    sys.modules["ctypes.util"] = stand_in
    ctypes.util = stand_in
    deferred = _defer()
    try:
        import trio  # noqa: F401
    finally:
        _remove(stand_in)
        _undefer(deferred)


def _remove(stand_in: types.ModuleType) -> None:
    import ctypes

    if sys.modules.get("ctypes.util") is stand_in:
        del sys.modules["ctypes.util"]
    if getattr(ctypes, "util", None) is stand_in:
        del ctypes.util


def _import_trio_patched(util: types.ModuleType) -> None:
    """``ctypes.util`` was already loaded: answer the one lookup, then put it back."""
    real = util.find_library

    def find_library(name: str) -> str | None:
        return PTHREAD_SONAME if name == "pthread" else real(name)

    util.find_library = find_library  # type: ignore[attr-defined]
    deferred = _defer()
    try:
        import trio  # noqa: F401
    finally:
        util.find_library = real  # type: ignore[attr-defined]
        _undefer(deferred)
