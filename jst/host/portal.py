"""The xdg-desktop-portal folder dialog (FileChooser ``OpenFile`` with ``directory``).

The portal is the desktop's own dialog on every modern Linux desktop (GNOME, KDE,
others), sandboxed or not, so it is our first choice there. It is a D-Bus API:

1. ``org.freedesktop.portal.FileChooser`` at ``/org/freedesktop/portal/desktop`` on the
   session bus; its ``version`` property must be 3 or more (``directory`` came in 3).
2. ``OpenFile(parent_window, title, options)`` returns a *request* object path at once;
   the answer comes later as that request's ``Response(u response, a{sv} results)``
   signal: 0 = chosen (``results["uris"]``, ``file://`` URIs), 1 = cancelled, 2 = error.
3. To not miss a fast answer we subscribe before calling. The request path is
   predictable from our unique bus name and the ``handle_token`` we pass (portal
   version 0.9+); older portals may return another path, so signals are matched on the
   path ``OpenFile`` actually returned.

``PortalUnavailable`` means "use the next dialog" (no session bus, no portal, a portal
without a FileChooser backend); it is not an error the user sees.
"""

from __future__ import annotations

import os
import secrets
from typing import Any
from urllib.parse import unquote, urlsplit

import trio

try:
    from jeepney import DBusAddress, MatchRule, MessageType, Properties, new_method_call
    from jeepney.bus_messages import message_bus
    from jeepney.io.trio import Proxy, open_dbus_router
    from jeepney.low_level import HeaderFields
except ImportError:  # not installed on macOS/Windows, where there is no portal
    open_dbus_router = None

PORTAL_BUS_NAME = "org.freedesktop.portal.Desktop"
PORTAL_PATH = "/org/freedesktop/portal/desktop"
FILE_CHOOSER = "org.freedesktop.portal.FileChooser"
REQUEST = "org.freedesktop.portal.Request"
# Asking the portal its version must not hang a pick when the bus is wedged.
QUERY_TIMEOUT = 5.0


class PortalUnavailable(Exception):
    pass


class PortalFailed(Exception):
    """The portal showed a dialog and reported an error (response 2)."""


def _path_from_uri(uri: str) -> str | None:
    parts = urlsplit(uri)
    if parts.scheme != "file":
        return None
    return os.fsdecode(unquote(parts.path).encode("utf-8", "surrogateescape"))


async def pick_folder(title: str, initial: str) -> str | None:
    """The folder chosen in the portal's dialog, ``None`` if cancelled."""
    if open_dbus_router is None or not os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
        raise PortalUnavailable("no D-Bus session bus")
    outcome: list[str | None] = []
    failure: list[Exception] = []
    try:
        async with open_dbus_router("SESSION") as router:
            # Raised inside the router's nursery, an error would come out wrapped in an
            # exception group; carry it out of the block instead.
            try:
                outcome.append(await _pick(router, title, initial))
            except Exception as exc:
                failure.append(exc)
    except (OSError, ValueError) as exc:
        raise PortalUnavailable(f"cannot connect to the session bus: {exc}") from exc
    if failure:
        if isinstance(failure[0], (PortalUnavailable, PortalFailed)):
            raise failure[0]
        raise PortalUnavailable(f"cannot talk to the portal: {failure[0]!r}") from failure[0]
    return outcome[0]


async def _pick(router: Any, title: str, initial: str) -> str | None:
    chooser = DBusAddress(PORTAL_PATH, bus_name=PORTAL_BUS_NAME, interface=FILE_CHOOSER)
    with trio.fail_after(QUERY_TIMEOUT):
        reply = await router.send_and_get_reply(Properties(chooser).get("version"))
    if reply.header.message_type == MessageType.error:
        error = reply.header.fields.get(HeaderFields.error_name)
        raise PortalUnavailable(f"no FileChooser portal ({error})")
    ((_sig, version),) = reply.body
    if version < 3:
        raise PortalUnavailable(f"FileChooser portal version {version} cannot choose folders")
    rule = MatchRule(type="signal", interface=REQUEST, member="Response")
    await Proxy(message_bus, router).AddMatch(rule)
    token = "jst" + secrets.token_hex(8)
    options = {
        "handle_token": ("s", token),
        "directory": ("b", True),
        "modal": ("b", True),
        "current_folder": ("ay", os.fsencode(initial) + b"\0"),
    }
    # Several Response signals may be queued before we see ours (other requests of
    # this connection cannot exist, but be generous rather than drop ours).
    async with router.filter(rule, bufsize=8) as responses:
        call = new_method_call(chooser, "OpenFile", "ssa{sv}", ("", title, options))
        reply = await router.send_and_get_reply(call)
        if reply.header.message_type == MessageType.error:
            raise PortalUnavailable(f"OpenFile failed: {reply.body}")
        (handle,) = reply.body
        while True:
            signal = await responses.receive()
            if signal.header.fields.get(HeaderFields.path) == handle:
                break
    response, results = signal.body
    if response == 1:
        return None
    if response != 0:
        raise PortalFailed(f"the portal's folder dialog failed (response {response})")
    uris = results.get("uris", ("as", []))[1]
    return _path_from_uri(uris[0]) if uris else None
