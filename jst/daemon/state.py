"""What the io-daemon knows: its token, the download roots, the extension id, counters.

Roots and the extension id come from ``rpc-info.json`` (the profile whose ``install_id``
is ``--install-id``), loaded at startup and again on ``POST /api/read-rpc-info-from-disk``.
A failed load at startup is only a warning (§5.2); a failed reload keeps what we had.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import attrs

from jst.daemon.errors import DaemonError, Forbidden
from jst.daemon.http import CorsPolicy
from jst.daemon.paths import Target, resolve

log = logging.getLogger("jst.daemon")


class ConfigLoadError(DaemonError):
    """rpc-info.json could not be read, parsed, or has no profile for our install id."""


@attrs.define
class Stats:
    """The ``GET /stats`` counters (§5.9.5); the /io multiplexer keeps them current."""

    tcp_sockets: int = 0
    pending_connects: int = 0
    pending_tcp: int = 0
    udp_sockets: int = 0
    tcp_servers: int = 0
    ws_connections: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    started: float = attrs.field(factory=time.monotonic)

    def snapshot(self) -> dict[str, int]:
        # Key order is part of the wire format (§5.9.5).
        return {
            "tcp_sockets": self.tcp_sockets,
            "pending_connects": self.pending_connects,
            "pending_tcp": self.pending_tcp,
            "udp_sockets": self.udp_sockets,
            "tcp_servers": self.tcp_servers,
            "ws_connections": self.ws_connections,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "uptime_secs": int(time.monotonic() - self.started),
        }


@attrs.define
class DaemonState:
    token: bytes
    install_id: str
    rpc_info_path: Path
    cors: CorsPolicy
    roots: dict[str, str] = attrs.field(factory=dict)  # root key -> folder
    extension_id: str | None = None
    stats: Stats = attrs.field(factory=Stats)
    port: int = 0  # the listening port, set by server.serve (streams.py builds URLs with it)

    def load_config(self) -> None:
        """Replace roots and extension id from disk; raise ``ConfigLoadError`` (no change)."""
        # Not at import: a daemon under a host gets its config over the control channel
        # and never reads the file (issue 17).
        from jst.rpcinfo import RpcInfoError, parse_rpc_info

        try:
            data = self.rpc_info_path.read_bytes()
        except OSError as exc:
            raise ConfigLoadError(f"cannot read {self.rpc_info_path}: {exc}") from exc
        try:
            info = parse_rpc_info(data)
        except RpcInfoError as exc:
            raise ConfigLoadError(f"cannot parse {self.rpc_info_path}: {exc}") from exc
        profile = info.profile_for_install_id(self.install_id)
        if profile is None:
            raise ConfigLoadError(f"no profile with install_id {self.install_id!r}")
        self.roots = {root.key: root.path for root in profile.download_roots}
        self.extension_id = profile.extension_id
        log.info("loaded %d download root(s), extension id %s", len(self.roots), self.extension_id)

    def target(self, root_key: str, rel: str) -> Target:
        """§5.6: unknown root key -> 403, bad path -> 400."""
        root = self.roots.get(root_key)
        if root is None:
            raise Forbidden("Invalid root key")
        return resolve(root, rel)
