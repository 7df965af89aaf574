"""One compatibility fix to hypercorn: status lines carry their reason phrase.

hypercorn builds h11 responses without a reason, so the wire says ``HTTP/1.1 200 `` and
``HTTP/1.1 101 ``. The original (hyper) says ``HTTP/1.1 200 OK``, and clients of the
original check for ``HTTP/1.1 101 Switching Protocols`` verbatim (PROTOCOL.md §6.1).
hypercorn offers no hook for this, so we wrap the one method through which every
HTTP/1.1 response event passes. ``jst_tests`` pins the resulting status lines, so a
hypercorn release that changes this method fails the tests instead of the clients.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import h11

_PHRASES = {status.value: status.phrase.encode("ascii") for status in HTTPStatus}
_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    from hypercorn.protocol.h11 import H11Protocol

    send_event = H11Protocol._send_h11_event

    async def send_with_reason(self: Any, event: Any) -> None:
        if isinstance(event, h11.Response | h11.InformationalResponse) and not event.reason:
            # Set in place, as h11's own __init__ does: building a new event would
            # validate every header again (measured: ~12% of the daemon's CPU per request).
            object.__setattr__(event, "reason", _PHRASES.get(event.status_code, b""))
        await send_event(self, event)

    setattr(H11Protocol, "_send_h11_event", send_with_reason)  # noqa: B010 (see docstring)
    _installed = True
