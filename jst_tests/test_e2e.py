"""Runs the real-browser tests (``jst_tests/e2e/``) inside a private network namespace.

Chromium, the host it starts and the daemon all live in a namespace whose only
interface is ``lo`` (``unshare -rn``), so nothing the browser does can leave the machine.
Where Chromium, Playwright or ``unshare`` is missing the test is skipped and says why;
with ``JST_E2E_REQUIRED=1`` (``.ci/run`` sets it) a missing piece is a failure instead.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jst_tests import netns

REPO = Path(__file__).resolve().parent.parent


def missing() -> str | None:
    if shutil.which("chromium") is None:
        return "Chromium is not installed (make test installs Debian's chromium with apt)"
    if importlib.util.find_spec("playwright") is None:
        return "Playwright for Python is not installed (pip install -e '.[test]')"
    return netns.unavailable_reason()


@pytest.mark.slow
def test_real_chromium_end_to_end() -> None:
    reason = missing()
    if reason is not None:
        if os.environ.get("JST_E2E_REQUIRED") == "1":
            pytest.fail(f"the browser tests are required here but cannot run: {reason}")
        pytest.skip(reason)
    env = dict(os.environ, JST_E2E_INSIDE="1")
    result = subprocess.run(
        ["unshare", "-rn", "sh", "-c", netns.SETUP, "sh",
         sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA",
         str(REPO / "jst_tests" / "e2e")],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600, check=False,
    )  # fmt: skip
    output = result.stdout[-6000:] + result.stderr[-3000:]
    assert result.returncode == 0, output
    assert " passed" in result.stdout, output
    print(result.stdout[-2000:])
