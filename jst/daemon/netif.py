"""``GET /network/interfaces``: IPv4 addresses of every interface (§5.9.8)."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any


def prefix_length(netmask: str | None) -> int:
    """Number of set bits in a dotted netmask (0 when the OS gives none)."""
    if not netmask:
        return 0
    try:
        return bin(int(ipaddress.IPv4Address(netmask))).count("1")
    except ValueError:
        return 0


def ipv4_interfaces() -> list[dict[str, Any]]:
    import psutil

    result = []
    for name, addresses in psutil.net_if_addrs().items():
        for addr in addresses:
            if addr.family == socket.AF_INET:
                result.append(
                    {
                        "name": name,
                        "address": addr.address,
                        "prefixLength": prefix_length(addr.netmask),
                    }
                )
    return result


def multicast_interface_addresses() -> list[str]:
    """IPv4 addresses of the non-loopback interfaces, where multicast groups are joined (§6.9)."""
    import psutil

    result = []
    for addresses in psutil.net_if_addrs().values():
        for addr in addresses:
            if addr.family == socket.AF_INET:
                try:
                    if ipaddress.IPv4Address(addr.address).is_loopback:
                        continue
                except ValueError:
                    continue
                result.append(addr.address)
    return result
