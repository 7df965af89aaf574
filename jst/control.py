"""The host↔io-daemon control channel, sans-I/O.

Transport: one stream connection per daemon process, made by the daemon to the address
the host gave it in ``--host-control`` (a Unix socket in a 0700 directory the host owns;
on Windows a loopback TCP port, where the ``auth`` field below is what keeps others out).

Framing (``jst/jsonlines.py``): one JSON object per line (UTF-8, ``\\n``-terminated), at
most ``MAX_LINE`` bytes.
Every message carries ``"v"``, the protocol version; a peer that receives a version it
does not speak sends ``error`` and closes. The version is 1.

Messages::

    daemon → host  {"v":1,"type":"ready","pid":<int>,"port":<int>,"auth":"<daemon token>"}
                   first message, once the daemon listens; ``auth`` proves it is the
                   child the host started (the token only ever travelled in its env)
    host → daemon  {"v":1,"type":"config","seq":<int>,"extension_id":<str|null>,
                    "roots":[{"key":"…","path":"…"},…],"install_id":<str|null>}
                   replaces the daemon's roots and extension id (what
                   POST /api/read-rpc-info-from-disk does for other clients); a string
                   ``install_id`` also replaces the daemon's ``--install-id`` (the host
                   starts its daemon before the handshake names the profile). A daemon
                   started with ``--host-control`` serves nothing until the first
                   ``config`` is in effect: connections wait in the listening socket's
                   backlog, so no request ever sees a daemon without its roots.
    daemon → host  {"v":1,"type":"applied","seq":<int>}
                   ``config`` number ``seq`` is in effect
    daemon → host  {"v":1,"type":"stopping","reason":"…"}
                   the daemon is exiting on purpose (POST /control/shutdown, a signal);
                   the host does not restart it
    either         {"v":1,"type":"error","message":"…"}   then the sender closes

Either side closing the connection means the other is gone: the daemon exits at once
(its parent is gone or has dropped it), the host treats the daemon as crashed.
"""

from __future__ import annotations

from typing import Any

import attrs

from jst import jsonlines

VERSION = 1
# Generous: a config message with thousands of roots is well under this.
MAX_LINE = 4 * 1024 * 1024


class ControlError(Exception):
    """The peer sent something this protocol does not allow; the connection must close."""


@attrs.frozen
class Ready:
    pid: int
    port: int
    auth: str


@attrs.frozen
class Config:
    seq: int
    extension_id: str | None
    roots: dict[str, str]  # key -> path
    install_id: str | None = None  # None: keep the daemon's


@attrs.frozen
class Applied:
    seq: int


@attrs.frozen
class Stopping:
    reason: str


@attrs.frozen
class Error:
    message: str


Message = Ready | Config | Applied | Stopping | Error


def encode(message: Message) -> bytes:
    body: dict[str, Any] = {}
    match message:
        case Ready(pid, port, auth):
            body.update(type="ready", pid=pid, port=port, auth=auth)
        case Config(seq, extension_id, roots, install_id):
            body.update(
                type="config",
                seq=seq,
                extension_id=extension_id,
                roots=[{"key": k, "path": p} for k, p in roots.items()],
                install_id=install_id,
            )
        case Applied(seq):
            body.update(type="applied", seq=seq)
        case Stopping(reason):
            body.update(type="stopping", reason=reason)
        case Error(text):
            body.update(type="error", message=text)
    return jsonlines.encode(VERSION, body)


def _int(obj: dict[str, Any], name: str) -> int:
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ControlError(f"'{name}' must be a non-negative integer")
    return value


def _str(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        raise ControlError(f"'{name}' must be a string")
    return value


def _roots(value: Any) -> dict[str, str]:
    if not isinstance(value, list):
        raise ControlError("'roots' must be an array")
    roots: dict[str, str] = {}
    for item in value:
        if not isinstance(item, dict):
            raise ControlError("each root must be an object")
        roots[_str(item, "key")] = _str(item, "path")
    return roots


def decode(line: bytes) -> Message:
    obj = jsonlines.decode(line, VERSION, ControlError)
    match obj.get("type"):
        case "ready":
            return Ready(_int(obj, "pid"), _int(obj, "port"), _str(obj, "auth"))
        case "config":
            ext, install_id = obj.get("extension_id"), obj.get("install_id")
            if ext is not None and not isinstance(ext, str):
                raise ControlError("'extension_id' must be a string or null")
            if install_id is not None and not isinstance(install_id, str):
                raise ControlError("'install_id' must be a string or null")
            return Config(_int(obj, "seq"), ext, _roots(obj.get("roots")), install_id)
        case "applied":
            return Applied(_int(obj, "seq"))
        case "stopping":
            return Stopping(_str(obj, "reason"))
        case "error":
            return Error(_str(obj, "message"))
        case other:
            raise ControlError(f"unknown message type {other!r}")


class LineDecoder(jsonlines.LineDecoder[Message]):
    """Split received bytes into messages."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        super().__init__(decode, ControlError, max_line)
