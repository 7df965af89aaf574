"""A stand-in browser for link-handler tests: ``fake_browser.py <url>``.

Like a real browser opening the launch page, it ends up starting a native host: it
records its argv, starts ``jst-native-host`` with a stdin pipe it keeps open (as Chrome
keeps the port open) and the host's stdout in a file, records both pids, then waits
to be killed. Paths come from ``FAKE_BROWSER_DIR``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

directory = Path(os.environ["FAKE_BROWSER_DIR"])
(directory / "argv.json").write_text(json.dumps(sys.argv[1:]))
if os.environ.get("FAKE_BROWSER_STARTS_HOST", "1") == "1":
    with open(directory / "host-stdout", "wb") as out:
        host = subprocess.Popen(
            [os.environ["FAKE_BROWSER_HOST"], "chrome-extension://fakefakefake/"],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.DEVNULL,
        )
    (directory / "pids").write_text(f"{os.getpid()} {host.pid}")
else:
    (directory / "pids").write_text(f"{os.getpid()}")
time.sleep(120)
