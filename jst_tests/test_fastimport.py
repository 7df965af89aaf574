"""``jst.fastimport.import_trio``: trio as ``import trio`` gives it, minus the slow steps."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the shortcut is Linux only"
)


def run_fresh(code: str) -> str:
    """``code`` in a fresh interpreter (the shortcut only matters for a first import)."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


def test_worker_threads_are_named_and_ctypes_util_is_the_real_one_after() -> None:
    out = run_fresh(
        """
        import sys, threading
        from jst.fastimport import import_trio
        import_trio()
        import trio
        unused = ("shutil", "tempfile", "bz2", "lzma", "ssl", "_ssl", "idna")
        print(sorted(m for m in unused if m in sys.modules))
        import ctypes.util
        print(ctypes.util.__file__.endswith("util.py"), bool(ctypes.util.find_library("c")))

        def comm():
            path = f"/proc/self/task/{threading.get_native_id()}/comm"
            with open(path) as f:
                return f.read().strip()

        print(trio.run(trio.to_thread.run_sync, comm))
        """
    )
    modules, real_util, thread_name = out.splitlines()
    assert modules == "[]"  # loaded for nothing at a cold start
    assert real_util == "True True"
    # trio names its worker threads after the function, through libpthread
    assert thread_name.startswith("comm from")


def test_an_already_loaded_ctypes_util_is_left_as_it_was() -> None:
    out = run_fresh(
        """
        import ctypes.util
        real = ctypes.util.find_library
        from jst.fastimport import import_trio
        import_trio()
        import trio._core._thread_cache as cache
        print(ctypes.util.find_library is real, cache.set_os_thread_name is not None)
        """
    )
    assert out == "True True"


def test_trio_reaches_the_real_ssl_and_idna_on_first_use() -> None:
    out = run_fresh(
        """
        import sys
        from jst.fastimport import import_trio
        import_trio()
        import trio, trio._ssl, trio._socket
        context = trio._ssl._stdlib_ssl.create_default_context()  # the first use
        import ssl, idna
        print(isinstance(context, ssl.SSLContext), sys.modules["ssl"] is ssl)
        print(trio._ssl._stdlib_ssl.SSLEOFError is ssl.SSLEOFError)
        print(trio._socket._idna.encode("bücher.example").decode())
        """
    )
    assert out.splitlines() == ["True True", "True", "xn--bcher-kva.example"]
