"""UDP multicast through the daemon; run by test_daemon_io inside a private netns only.

Usage: python -m jst_tests.multicast_scenario <tmpdir>   (exit 0 = passed)
"""

from __future__ import annotations

import socket
import struct
import sys
import tempfile
from pathlib import Path

import trio

from jst_tests.daemonproc import DaemonEnv, running_daemon
from jst_tests.ioclient import UDP_JOIN, UDP_LEAVE, UDP_RECV, io_session

GROUP = "239.192.152.143"  # BEP 14's Local Service Discovery group


async def scenario(env: DaemonEnv, port: int) -> None:
    async with io_session(port, env.token) as client:
        bound = await client.udp_bind(1, 0, "0.0.0.0")
        assert bound is not None
        await client.send(UDP_JOIN, 0, struct.pack("<I", 1) + GROUP.encode())
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        with sender:
            await trio.sleep(0.1)  # the join request is fire-and-forget
            sender.sendto(b"announce", (GROUP, bound))
            event = await client.expect(UDP_RECV, 1)
            assert event.payload.endswith(b"announce"), event
            # Leave, then a datagram to the group no longer arrives.
            await client.send(UDP_LEAVE, 0, struct.pack("<I", 1) + GROUP.encode())
            await trio.sleep(0.1)
            sender.sendto(b"after leave", (GROUP, bound))
            with trio.move_on_after(0.5):
                late = await client.expect(UDP_RECV, 1)
                raise AssertionError(f"received after leaving the group: {late}")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        env = DaemonEnv(Path(tmp))
        env.root.mkdir()
        env.write_rpc_info()
        with running_daemon(env) as daemon:
            trio.run(scenario, env, daemon.port)
    print("multicast scenario passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
