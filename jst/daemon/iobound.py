"""Listeners and UDP sockets of one ``/io`` session: bound by a task, served until closed.

Both have the same lifecycle (``run_bound``): bind, reply with the port or the failure,
count it in /stats, serve (accept loop §6.7, receive loop §6.8), and whatever ends it,
close the socket and leave the table. There are few of them, so each keeps its task.
Accepted connections are handed to the session's TCP table (``iotcp``) at once.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import logging
import socket
import sys
from collections.abc import Awaitable, Callable

import attrs
import trio

from jst.daemon import netif, wire
from jst.daemon.ioqueue import SessionIO
from jst.daemon.iotcp import TcpSockets, is_ip_literal, strip_brackets

log = logging.getLogger("jst.daemon.io")

UDP_RECEIVE_SIZE = 65535  # §6.8
MULTICAST_TTL = 2  # §6.9
# accept() failures (EMFILE...) are retried after a pause growing up to the maximum.
ACCEPT_BACKOFF_FIRST = 0.05
ACCEPT_BACKOFF_MAX = 1.0


@attrs.define(eq=False)
class BoundSocket:
    """A TCP listener or a UDP socket: bound by its task, then served until closed."""

    socket_id: int
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    sock: trio.socket.SocketType | None = None

    def close_socket(self) -> None:
        if self.sock is not None:
            self.sock.close()  # a listener's port is free as soon as this returns


BoundTable = dict[int, BoundSocket]


def set_reuse_address(sock: trio.socket.SocketType) -> None:
    """Rebind right after a close, but never share a port another socket listens on."""
    if sys.platform == "win32":
        # On Windows SO_REUSEADDR would let us steal a port in use; this is the opposite.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)  # type: ignore[attr-defined]
    else:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)


async def open_listening_socket(address: str, port: int) -> trio.socket.SocketType:
    """Bind and listen per §6.7: empty address = 0.0.0.0; names are resolved. OSError."""
    host = strip_brackets(address) or "0.0.0.0"
    infos = await trio.socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    if not infos:
        raise OSError(errno.EADDRNOTAVAIL, f"no address for {host!r}")
    family, kind, proto, _name, sockaddr = infos[0]
    sock = trio.socket.socket(family, kind, proto)
    try:
        set_reuse_address(sock)
        await sock.bind(sockaddr)
        sock.listen(1024)
    except BaseException:
        sock.close()
        raise
    return sock


class BoundSockets:
    """The listener and UDP tables of one session."""

    def __init__(self, io: SessionIO, tcp: TcpSockets) -> None:
        self.io = io
        self.stats = io.stats
        self.outbox = io.outbox
        self.tcp = tcp
        self.listeners: BoundTable = {}
        self.udp: BoundTable = {}

    def listen(self, request: wire.TcpListen, request_id: int) -> None:
        listener = self.start_bound(self.listeners, request.server_id)
        self.io.nursery.start_soon(self.tcp_listener, listener, request, request_id)

    def stop_listening(self, server_id: int) -> None:
        self.close_bound(self.listeners, server_id)

    def udp_bind(self, request: wire.UdpBind, request_id: int) -> None:
        udp = self.start_bound(self.udp, request.socket_id)
        self.io.nursery.start_soon(self.udp_socket, udp, request, request_id)

    def udp_close(self, socket_id: int) -> None:
        self.close_bound(self.udp, socket_id)

    def close_all(self) -> None:
        for bound in [*self.listeners.values(), *self.udp.values()]:
            bound.close_socket()

    def start_bound(self, table: BoundTable, socket_id: int) -> BoundSocket:
        self.close_bound(table, socket_id)  # a reused id replaces the old socket (§9.8)
        bound = BoundSocket(socket_id)
        table[socket_id] = bound
        return bound

    def close_bound(self, table: BoundTable, socket_id: int) -> None:
        old = table.pop(socket_id, None)
        if old is not None:
            old.scope.cancel()
            old.close_socket()

    async def run_bound(
        self,
        table: BoundTable,
        bound: BoundSocket,
        counter: str,
        bind: Callable[[], Awaitable[trio.socket.SocketType | None]],
        reply: Callable[[int | None], bytes],
        serve: Callable[[BoundSocket, trio.socket.SocketType], Awaitable[None]],
    ) -> None:
        """Bind, reply with the port (or the failure), count it in ``counter``, serve it;
        whatever ends it, the socket is closed and leaves ``table``."""
        try:
            with bound.scope:
                sock = await bind()
                if sock is None:
                    await self.outbox.put(reply(None))
                    return
                bound.sock = sock
                setattr(self.stats, counter, getattr(self.stats, counter) + 1)
                try:
                    await self.outbox.put(reply(sock.getsockname()[1]))
                    await serve(bound, sock)
                finally:
                    setattr(self.stats, counter, getattr(self.stats, counter) - 1)
        except Exception:
            log.exception("socket %d (%s): unexpected error", bound.socket_id, counter)
        finally:
            bound.close_socket()
            if table.get(bound.socket_id) is bound:
                del table[bound.socket_id]

    # -- TCP server sockets (§6.7) -------------------------------------------------------

    async def tcp_listener(self, listener: BoundSocket, request: wire.TcpListen, rid: int) -> None:
        async def bind() -> trio.socket.SocketType | None:
            try:
                return await open_listening_socket(request.address, request.port)
            except (OSError, ValueError, UnicodeError) as exc:
                log.debug("listener %d: cannot listen on %r: %s", sid, request.port, exc)
                return None

        sid = listener.socket_id
        reply = functools.partial(wire.encode_tcp_listen_result, rid, sid)
        await self.run_bound(self.listeners, listener, "tcp_servers", bind, reply, self.accept_loop)

    async def accept_loop(self, listener: BoundSocket, sock: trio.socket.SocketType) -> None:
        backoff = ACCEPT_BACKOFF_FIRST
        while True:
            try:
                peer_sock, address = await sock.accept()
            except OSError as exc:
                # EMFILE and friends: keep the listener, try again a little later (§9.10).
                log.warning("listener %d: accept failed: %s", listener.socket_id, exc)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, ACCEPT_BACKOFF_MAX)
                continue
            backoff = ACCEPT_BACKOFF_FIRST
            try:
                await self.outbox.wait_space()
                # TCP_ACCEPT is queued before any TCP_RECV of that socket (§6.7).
                self.tcp.adopt_accepted(listener.socket_id, peer_sock, address)
            except BaseException:
                peer_sock.close()
                raise

    # -- UDP (§6.8, §6.9) ----------------------------------------------------------------

    async def udp_socket(self, udp: BoundSocket, request: wire.UdpBind, rid: int) -> None:
        async def bind() -> trio.socket.SocketType | None:
            host = strip_brackets(request.address) or "0.0.0.0"
            if not is_ip_literal(host):  # UDP_BIND takes IP literals only (§6.8)
                return None
            sock = trio.socket.socket(
                socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM
            )
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                await sock.bind((host, request.port))
            except OSError as exc:
                log.debug("udp %d: cannot bind %r: %s", udp.socket_id, request.port, exc)
                sock.close()
                return None
            return sock

        reply = functools.partial(wire.encode_udp_bound, rid, udp.socket_id)
        await self.run_bound(self.udp, udp, "udp_sockets", bind, reply, self.udp_receive_loop)

    async def udp_receive_loop(self, udp: BoundSocket, sock: trio.socket.SocketType) -> None:
        while True:
            try:
                data, address = await sock.recvfrom(UDP_RECEIVE_SIZE)
            except ConnectionResetError:
                continue  # an ICMP port unreachable for an earlier send (§9.23)
            except OSError as exc:
                log.debug("udp %d: receive failed: %s", udp.socket_id, exc)
                await self.outbox.put(wire.encode_udp_close(udp.socket_id))
                return
            self.stats.bytes_received += len(data)
            await self.outbox.put(wire.encode_udp_recv(udp.socket_id, address[1], address[0], data))
            self.outbox.send_now()

    async def udp_send(self, request: wire.UdpSend) -> None:
        udp = self.udp.get(request.socket_id)
        if udp is None or udp.sock is None:
            return
        host = strip_brackets(request.address)
        if is_ip_literal(host):
            await self.udp_send_to(udp.sock, host, request.port, request.data)
        else:  # resolving may take seconds: do not hold up the session (§9.9)
            self.io.nursery.start_soon(self.udp_send_resolved, udp, host, request)

    async def udp_send_resolved(self, udp: BoundSocket, host: str, request: wire.UdpSend) -> None:
        sock = udp.sock
        if sock is None:
            return
        try:
            infos = await trio.socket.getaddrinfo(
                host, request.port, family=sock.family, type=socket.SOCK_DGRAM
            )
        except (OSError, UnicodeError, ValueError):
            return  # dropped silently (§6.8)
        if infos and self.udp.get(udp.socket_id) is udp:  # not closed meanwhile
            await self.udp_send_to(sock, str(infos[0][4][0]), request.port, request.data)

    async def udp_send_to(
        self, sock: trio.socket.SocketType, host: str, port: int, data: bytes
    ) -> None:
        try:
            await sock.sendto(data, (host, port))
        except (OSError, OverflowError, ValueError):
            return  # dropped silently (§6.8)
        self.stats.bytes_sent += len(data)

    def udp_multicast(self, request: wire.UdpMulticast) -> None:
        udp = self.udp.get(request.socket_id)
        if udp is None or udp.sock is None or udp.sock.family != socket.AF_INET:
            return
        try:
            group = ipaddress.IPv4Address(request.group.strip()).packed
        except ValueError:
            return  # non-IPv4 group: ignored (§6.9)
        sock = udp.sock
        interfaces = netif.multicast_interface_addresses()
        if request.join:
            joined = False
            for address in interfaces:
                if _set_membership(sock, socket.IP_ADD_MEMBERSHIP, group, address):
                    joined = True
            if not joined:
                _set_membership(sock, socket.IP_ADD_MEMBERSHIP, group, "0.0.0.0")
            outgoing = socket.inet_aton(interfaces[0] if interfaces else "0.0.0.0")
            try:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, outgoing)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, MULTICAST_TTL)
            except OSError as exc:
                log.debug("udp %d: multicast options: %s", request.socket_id, exc)
        else:
            for address in [*interfaces, "0.0.0.0"]:
                _set_membership(sock, socket.IP_DROP_MEMBERSHIP, group, address)


def _set_membership(sock: trio.socket.SocketType, option: int, group: bytes, iface: str) -> bool:
    try:
        sock.setsockopt(socket.IPPROTO_IP, option, group + socket.inet_aton(iface))
    except OSError:
        return False  # per-interface failures are ignored (§6.9)
    return True
