"""``jst service``: the persistent io-daemon coordinator (SERVICE.md).

* ``paths``   — the private runtime directory, its socket and lock files (no trio)
* ``client``  — blocking client of ``service.sock``: the one-shot host and the CLI (no trio)
* ``channel`` — the service↔daemon request channel (sans-I/O codec + a thin trio peer)
* ``rootstat``— download roots as the seed describes them (removable, availability)
* ``main``    — the service's nursery tree
* ``cli``     — ``jst service run|start|stop|status``
"""

from __future__ import annotations

TYPE_CHECKING = False  # not ``typing``: the one-shot host imports this package (issue 17)
if TYPE_CHECKING:
    from typing import Any


def query_status(timeout: float) -> dict[str, Any] | None:
    """The running service's status (``jst status``), or None when none answers."""
    from jst.service import client

    try:
        return client.request({"op": "status"}, timeout=timeout)
    except client.ServiceUnreachable:
        return None
