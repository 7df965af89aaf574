"""The daemon's end of the service channel (control_ws.ServiceLink) on a real Unix socket:
a request that comes while the daemon is still connecting to its service waits for the
link rather than failing, and one that comes when no service can be reached fails fast."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from jst.daemon import control_ws

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="Unix sockets only")


async def read_line(stream: trio.SocketStream, buf: bytearray) -> dict[str, Any]:
    while b"\n" not in buf:
        data = await stream.receive_some(65536)
        assert data, "the daemon closed the channel"
        buf += data
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    message: dict[str, Any] = json.loads(line)
    return message


async def test_a_request_made_before_the_link_is_up_waits_for_it(tmp_path: Path) -> None:
    path = str(tmp_path / "service.sock")
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await listener.bind(path)
    listener.listen()
    link = control_ws.ServiceLink(f"unix:{path}", "daemon-token")
    answers: list[tuple[int, Any]] = []
    answered = trio.Event()

    async def service() -> None:
        sock, _ = await listener.accept()
        stream = trio.SocketStream(sock)
        buf = bytearray()
        hello = await read_line(stream, buf)
        assert (hello["op"], hello["auth"]) == ("hello", "daemon-token")
        request = await read_line(stream, buf)
        assert request["op"] == "roots"
        reply = {"v": 1, "re": request["id"], "status": 200, "body": [{"key": "k1"}]}
        await stream.send_all(json.dumps(reply).encode() + b"\n")
        await trio.sleep_forever()

    async def ask() -> None:
        answers.append(await link.ask("roots"))
        answered.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(service)
            nursery.start_soon(ask)
            await trio.testing.wait_all_tasks_blocked()
            assert answers == []  # asked while the daemon had not even begun to connect
            nursery.start_soon(link.run)
            await answered.wait()
            nursery.cancel_scope.cancel()
    listener.close()
    assert answers == [(200, [{"key": "k1"}])]


async def test_without_a_service_the_answer_is_a_prompt_503(tmp_path: Path) -> None:
    link = control_ws.ServiceLink(f"unix:{tmp_path / 'nobody-listens.sock'}", "t")
    answers: list[tuple[int, Any]] = []

    async def run_link() -> None:
        with pytest.raises(FileNotFoundError):
            await link.run()

    async def ask() -> None:
        answers.append(await link.ask("roots"))

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(run_link)
    assert answers == [(503, control_ws.UNAVAILABLE)]
    # Not after waiting out the connect timeout: the failed connect settles the link.
    assert trio.current_time() - start < control_ws.CONNECT_TIMEOUT
    assert await link.ask("roots") == (503, control_ws.UNAVAILABLE)
