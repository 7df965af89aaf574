"""Run a command inside a private network namespace with only ``lo`` (network safety).

Anything that could send traffic beyond loopback (multicast joins send IGMP reports on
every interface) runs here: ``unshare -rn`` gives the command its own network stack
where ``lo`` is the only interface, so nothing can leave the machine.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence

# lo up, and a multicast route so groups can be joined and looped back on lo.
SETUP = 'ip link set lo up && ip route add 224.0.0.0/4 dev lo && exec "$@"'


def unavailable_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return "private network namespaces are Linux-only"
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = subprocess.run(
        ["unshare", "-rn", "sh", "-c", SETUP, "sh", "true"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        return f"unshare -rn is not permitted here: {probe.stderr.decode(errors='replace')}"
    return None


def run_isolated(argv: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["unshare", "-rn", "sh", "-c", SETUP, "sh", *argv],
        capture_output=True,
        timeout=timeout,
        check=False,
    )
