"""The browser tests run only inside the private network namespace that
``jst_tests/test_e2e.py`` creates for them (``JST_E2E_INSIDE=1``); collected any other
way they are left out, so a browser can never start with a route off this machine."""

from __future__ import annotations

import os

collect_ignore_glob = [] if os.environ.get("JST_E2E_INSIDE") == "1" else ["test_*.py"]
