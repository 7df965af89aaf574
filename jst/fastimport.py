"""``import trio`` without its slowest step, for the programs whose start is timed.

When imported, trio looks up ``pthread_setname_np`` to name its worker threads, and
finds the library with ``ctypes.util.find_library("pthread")``, which on Linux runs
``/sbin/ldconfig -p`` in a child process and parses its output: 10-15 ms, the single
slowest step of ``import trio``, paid by the host and by the daemon at every cold start
(issue 17). On Linux the answer is fixed: glibc's soname has been ``libpthread.so.0``
for decades (since 2.34 a stub that still resolves the symbol); on musl that name does
not load, trio's ``CDLL`` call fails, and it simply leaves its threads unnamed, which
is also what happens there today. Every other lookup goes to the real function, and
the real function is put back as soon as trio is imported.
"""

from __future__ import annotations

import sys


def import_trio() -> None:
    if "trio" in sys.modules or not sys.platform.startswith("linux"):
        import trio

        return
    import ctypes.util

    real = ctypes.util.find_library

    def find_library(name: str) -> str | None:
        return "libpthread.so.0" if name == "pthread" else real(name)

    ctypes.util.find_library = find_library
    try:
        import trio  # noqa: F401
    finally:
        ctypes.util.find_library = real
