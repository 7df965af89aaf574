"""Finding a running native-host (§7.2) and handing it a link (§7.4).

A host publishes itself in its ``rpc-info.json`` profile: ``pid``, ``port`` and ``token``
of its link endpoint (§4.3) and, for jst hosts, ``jst_link``: a Unix socket in the host's
private directory. We try profiles newest first; a host counts when its pid is alive and
``/health`` with its token answers 2xx within 1 s. A stale profile whose port now belongs
to someone else (a 403) is skipped, not fatal (§9.25).

The token and the link go only to an endpoint shown to belong to the profile's pid
(``_open``): a profile's pid can be alive again as another program, and its port can
belong to anyone. Before a byte is sent on a new connection:

* Unix socket (jst hosts): its directory is ours and private (owner = us, no group or
  other permissions, not a symlink), the socket is ours, and the process listening on
  it is the profile's pid (``SO_PEERCRED``, Linux; elsewhere the private directory is
  the proof).
* TCP (the original's hosts): the socket listening on that port belongs to the
  profile's pid (psutil, i.e. ``/proc/net/tcp`` and ``/proc/<pid>/fd`` on Linux). The
  check runs after the connection is made, so the listener we reached is that one.

Anything else is skipped and logged (``NotTheHost``).

The HTTP client is h11 over a trio stream, Unix socket or loopback TCP alike.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import struct
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs
import h11
import psutil
import trio

from jst import faults
from jst.host.profiles import LINK_KEY
from jst.linkhandler.target import TOO_LARGE, LinkError, Magnet, TorrentFile
from jst.rpcinfo import Profile, RpcInfoError, parse_rpc_info

log = logging.getLogger("jst.linkhandler")

HEALTH_TIMEOUT = 1.0  # §7.2
DELIVERY_TIMEOUT = 30.0  # §7.4: the original's HTTP client default
MAX_RESPONSE = 64 * 1024


@attrs.frozen
class HostAddress:
    pid: int
    token: str
    address: str  # unix:<path> or tcp:127.0.0.1:<port>


@attrs.frozen
class HttpReply:
    status: int
    reason: str
    body: bytes


def candidates(rpc_info: Path) -> list[HostAddress]:
    """Hosts listed in rpc-info.json whose process is alive, newest first."""
    try:
        info = parse_rpc_info(rpc_info.read_bytes())
    except (OSError, RpcInfoError):
        return []
    profiles: list[Profile] = sorted(info.profiles, key=lambda p: p.last_used, reverse=True)
    found: list[HostAddress] = []
    for p in profiles:
        if not psutil.pid_exists(p.pid):
            continue
        link = p.extra.get(LINK_KEY)
        if isinstance(link, str) and link.startswith("unix:"):
            found.append(HostAddress(p.pid, p.token, link))
        found.append(HostAddress(p.pid, p.token, f"tcp:127.0.0.1:{p.port}"))
    return found


class HostUnreachable(LinkError):
    """Nothing was sent: the host went away before we could connect (safe to retry)."""


class NotTheHost(HostUnreachable):
    """Nothing was sent: the endpoint is not shown to belong to the profile's host."""


def _check_private_socket(path: str) -> None:
    """The socket and its directory are ours, and the directory is private (0700)."""
    uid = os.getuid()
    try:
        directory = os.lstat(os.path.dirname(path))
        sock = os.lstat(path)
    except OSError as exc:
        raise HostUnreachable(f"Could not reach the JSTorrent host: {exc}") from exc
    if not stat.S_ISDIR(directory.st_mode) or directory.st_uid != uid:
        raise NotTheHost(f"{os.path.dirname(path)} is not a directory of ours")
    if directory.st_mode & 0o077:
        raise NotTheHost(f"{os.path.dirname(path)} is open to other users")
    if not stat.S_ISSOCK(sock.st_mode) or sock.st_uid != uid:
        raise NotTheHost(f"{path} is not a socket of ours")


def _peer_pid(sock: trio.socket.SocketType) -> int | None:
    """The pid of the process at the other end of a Unix socket, where the OS tells."""
    if sys.platform != "linux":
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid: int = struct.unpack("3i", creds)[0]
    return pid


LISTEN_ADDRESSES = {"127.0.0.1", "0.0.0.0", "::", "::ffff:127.0.0.1"}


def _listens_on(pid: int, port: int) -> bool:
    """Whether process ``pid`` owns a socket listening on loopback ``port``."""
    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return False
    return any(
        c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.laddr.ip in LISTEN_ADDRESSES
        for c in connections
    )


async def _open(host: HostAddress) -> trio.abc.Stream:
    """A connection to ``host``'s endpoint, once shown to be the host's (``NotTheHost``)."""
    kind, _, rest = host.address.partition(":")
    try:
        if kind == "unix":
            _check_private_socket(rest)
            unix = await trio.open_unix_socket(rest)
            peer = _peer_pid(unix.socket)
            if peer is not None and peer != host.pid:
                await unix.aclose()
                raise NotTheHost(f"{rest} is served by pid {peer}, not the host's")
            return unix
        address, _, port = rest.rpartition(":")
        tcp = await trio.open_tcp_stream(address, int(port))
    except OSError as exc:
        raise HostUnreachable(f"Could not reach the JSTorrent host: {exc}") from exc
    if not await trio.to_thread.run_sync(_listens_on, host.pid, int(port)):
        await tcp.aclose()
        raise NotTheHost(f"port {port} does not belong to pid {host.pid}")
    return tcp


async def request(
    host: HostAddress,
    method: str,
    target: str,
    body: bytes = b"",
    content_type: str | None = None,
) -> HttpReply:
    """One HTTP/1.1 exchange. ``HostUnreachable`` if the connection could not be made,
    ``NotTheHost`` if it is not the host's (nothing sent either way); ``OSError`` if it
    broke afterwards (the host may then have acted on the request)."""
    stream = await _open(host)
    async with stream:
        conn = h11.Connection(h11.CLIENT)
        kind, _, rest = host.address.partition(":")
        # The host serves only Host values naming the address it listens on (rebinding).
        host_header = rest if kind == "tcp" else "localhost"
        headers = [("host", host_header), ("content-length", str(len(body)))]
        if content_type is not None:
            headers.append(("content-type", content_type))
        data = conn.send(h11.Request(method=method, target=target, headers=headers))
        data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
        if method == "POST":
            faults.point("link.before-send")
        await stream.send_all(data)
        if method == "POST":
            faults.point("link.after-send")
        status, reason, received = 0, "", bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(bytes(await stream.receive_some(65536)))
            elif isinstance(event, h11.Response):
                status, reason = event.status_code, event.reason.decode("latin-1")
            elif isinstance(event, h11.Data):
                received += event.data
                if len(received) > MAX_RESPONSE:
                    raise OSError("response too large")
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return HttpReply(status, reason, bytes(received))


async def healthy(host: HostAddress) -> bool:
    try:
        with trio.fail_after(HEALTH_TIMEOUT):
            reply = await request(host, "GET", f"/health?token={quote(host.token)}")
    except NotTheHost as exc:
        log.warning("skipping host pid %d at %s: %s", host.pid, host.address, exc)
        return False
    except (LinkError, OSError, trio.TooSlowError, h11.ProtocolError, ValueError) as exc:
        log.info("host pid %d at %s is not answering: %s", host.pid, host.address, exc)
        return False
    if not 200 <= reply.status < 300:
        log.info("host pid %d at %s answered %d", host.pid, host.address, reply.status)
        return False
    return True


async def find_host(rpc_info: Path) -> HostAddress | None:
    for host in candidates(rpc_info):
        if await healthy(host):
            return host
    return None


def _request_for(item: Magnet | TorrentFile) -> tuple[str, dict[str, Any]]:
    if isinstance(item, Magnet):
        return "/add-magnet", {"magnet": item.link}
    return "/add-torrent", {"file_name": item.name, "contents_base64": item.contents_base64}


async def deliver(host: HostAddress, item: Magnet | TorrentFile) -> None:
    path, payload = _request_for(item)
    body = json.dumps(payload).encode("utf-8")
    try:
        with trio.fail_after(DELIVERY_TIMEOUT):
            reply = await request(
                host, "POST", f"{path}?token={quote(host.token)}", body, "application/json"
            )
    except trio.TooSlowError as exc:
        raise LinkError(f"The JSTorrent host did not answer within {DELIVERY_TIMEOUT:g} s") from exc
    except (OSError, h11.ProtocolError) as exc:  # after connecting: it may have the link
        raise LinkError(f"The JSTorrent host broke off the delivery: {exc}") from exc
    if reply.status == 413:
        raise LinkError(TOO_LARGE)
    if not 200 <= reply.status < 300:
        raise LinkError(f"Failed to add request: {reply.status} {reply.reason}")
    log.info("delivered to host pid %d via %s", host.pid, host.address)
