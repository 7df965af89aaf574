"""``GET /daemon`` on the host's link endpoint: what ``jst status`` asks a jst host for
its daemon's token (which the host passes to the daemon through a pipe, so it is in
neither ``ps`` nor ``/proc/<pid>/environ``). Private socket and host token only."""

from __future__ import annotations

import json
from typing import Any

from jst.host import linkrpc

TOKEN = "host-token"
DAEMON = {"pid": 4242, "port": 40123, "token": "daemon-token"}


def endpoint(tcp: bool, daemon: dict[str, Any] | None = DAEMON) -> linkrpc.Endpoint:
    hosts = linkrpc.loopback_hosts(5555) if tcp else None
    return linkrpc.Endpoint(TOKEN, "0.2.0", 1, hosts, None if tcp else (lambda: daemon))


def ask(ep: linkrpc.Endpoint, target: bytes, method: str = "GET") -> linkrpc.Reply:
    reply = linkrpc.handle(ep, method, target, [(b"host", b"localhost")], b"")
    assert isinstance(reply, linkrpc.Reply)
    return reply


def test_the_private_socket_tells_the_token_holder_about_the_daemon() -> None:
    reply = ask(endpoint(tcp=False), b"/daemon?token=" + TOKEN.encode())
    assert reply.status == 200
    assert json.loads(reply.body) == DAEMON


def test_a_wrong_or_missing_token_learns_nothing() -> None:
    for target in (b"/daemon?token=nope", b"/daemon"):
        reply = ask(endpoint(tcp=False), target)
        assert reply.status == 403
        assert b"daemon-token" not in reply.body


def test_the_loopback_tcp_endpoint_has_no_such_route() -> None:
    reply = linkrpc.handle(
        endpoint(tcp=True),
        "GET",
        b"/daemon?token=" + TOKEN.encode(),
        [(b"host", b"127.0.0.1:5555")],
        b"",
    )
    assert reply.status == 404


def test_no_running_daemon_is_503_and_other_methods_405() -> None:
    assert ask(endpoint(tcp=False, daemon=None), b"/daemon?token=" + TOKEN.encode()).status == 503
    assert ask(endpoint(tcp=False), b"/daemon?token=" + TOKEN.encode(), "POST").status == 405
