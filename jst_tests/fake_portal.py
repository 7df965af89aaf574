"""A stand-in xdg-desktop-portal FileChooser, run as a process on a private test bus.

    python -m jst_tests.fake_portal <bus address> <record file> <answer>

It owns ``org.freedesktop.portal.Desktop`` and answers ``OpenFile`` like the real portal:
returns the request path at once, then emits ``Response`` on it. ``<answer>`` is a folder
(response 0 with its ``file://`` URI), ``cancel`` (1) or ``fail`` (2). The options it
received are appended to ``<record file>`` as JSON lines.
"""

from __future__ import annotations

import json
import pathlib
import sys

from jeepney import DBusAddress, MessageType, new_error, new_method_return, new_signal
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import open_dbus_connection
from jeepney.low_level import HeaderFields

PATH = "/org/freedesktop/portal/desktop"


def main() -> None:
    address, record, answer = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3]
    conn = open_dbus_connection(bus=address)
    conn.send_and_get_reply(message_bus.RequestName("org.freedesktop.portal.Desktop"))
    print("ready", flush=True)
    while True:
        msg = conn.receive()
        if msg.header.message_type != MessageType.method_call:
            continue
        member = msg.header.fields.get(HeaderFields.member)
        if member == "Get":
            conn.send(new_method_return(msg, "v", (("u", 4),)))
        elif member == "OpenFile":
            parent, title, options = msg.body
            plain = {k: v[1] for k, v in options.items()}
            if isinstance(plain.get("current_folder"), bytes):
                plain["current_folder"] = plain["current_folder"].decode()
            with record.open("a") as f:
                f.write(json.dumps({"title": title, "parent": parent, "options": plain}) + "\n")
            sender = msg.header.fields[HeaderFields.sender][1:].replace(".", "_")
            handle = f"{PATH}/request/{sender}/{plain['handle_token']}"
            conn.send(new_method_return(msg, "o", (handle,)))
            if answer == "cancel":
                body: tuple[object, ...] = (1, {})
            elif answer == "fail":
                body = (2, {})
            else:
                body = (0, {"uris": ("as", [pathlib.Path(answer).as_uri()])})
            emitter = DBusAddress(handle, interface="org.freedesktop.portal.Request")
            conn.send(new_signal(emitter, "Response", "ua{sv}", body))
        else:
            conn.send(new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod"))


if __name__ == "__main__":
    main()
