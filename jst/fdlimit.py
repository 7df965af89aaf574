"""The soft open-file limit, raised to the hard limit at start (issue 12).

The common soft limit of 1024 is what a flood of idle connections exhausts first; the
hard limit is ours to take. The host raises it before it starts its daemon (which
inherits it) and the daemon raises it again for callers that start it directly.
"""

from __future__ import annotations

import sys

# macOS refuses RLIM_INFINITY (and anything above OPEN_MAX) for the soft limit: there a
# large number is asked first, then 10240, its usual OPEN_MAX.
_UNLIMITED_TARGET = 1 << 20
_MACOS_OPEN_MAX = 10240


def raise_open_file_limit() -> int | None:
    """Raise the soft RLIMIT_NOFILE to the hard limit; the soft limit now in force
    (``None``: unlimited, or no such limit, as on Windows)."""
    if sys.platform == "win32":
        return None
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    target = _UNLIMITED_TARGET if hard == resource.RLIM_INFINITY else hard
    for wanted in (target, _MACOS_OPEN_MAX):
        if soft >= wanted:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:
            import logging  # not at import: the host calls us before it starts its daemon

            log = logging.getLogger("jst")
            log.debug("cannot raise the open-file limit to %d: %s", wanted, exc)
            continue
        soft = wanted
        break
    return soft
