"""The native-host under hostile input (issue 12): Native Messaging frames that used to
crash it, hostile link-endpoint clients, and file names that are not UTF-8."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator

import pytest

from jst.host import messages
from jst.host.nm import encode_frame
from jst_tests.faults.harness import alive
from jst_tests.hostproc import HostEnv, HostProcess, running_host

DEEP_ARRAY = b"[" * 1000 + b"]" * 1000


@pytest.fixture
def host(host_env: HostEnv) -> Iterator[HostProcess]:
    with running_host(host_env) as h:
        yield h


def frame(body: bytes) -> bytes:
    return struct.pack("<I", len(body)) + body


# -- item 4: Native Messaging frames ------------------------------------------------------------


def test_frames_that_used_to_crash_the_host_are_answered_or_skipped(host: HostProcess) -> None:
    host.handshake()
    daemon = host.daemon_pid()
    handshake = json.dumps(
        {"op": "handshake", "extensionId": "e" * 32, "installId": host.env.install_id, "id": "h2"}
    ).encode()
    host.send_raw(
        frame(handshake)  # an earlier request: its answer must not be lost
        + frame(DEEP_ARRAY)  # no id: logged and skipped
        + frame(b'{"id":"deep","op":"handshake","x":' + DEEP_ARRAY + b"}")
        + frame(b'{"id":"\\ud800","op":"pickDownloadDirectory!"}')  # a lone surrogate id
        + frame(b'{"id":"s","op":"deleteDownloadRoot","key":"\\udc00"}')
    )
    replies = {}
    for _ in range(4):
        reply = host.recv()
        replies[reply["id"]] = reply
    assert replies["h2"]["ok"] is True
    assert replies["h2"]["type"] == "DaemonInfo"
    for request_id in ("deep", "\ud800", "s"):
        assert replies[request_id]["ok"] is False
        assert replies[request_id]["error"]
    assert host.no_frame_within(0.5)
    assert host.proc.poll() is None
    assert alive(daemon)
    assert host.handshake()["payload"]["port"] == replies["h2"]["payload"]["port"]
    assert host.daemon_pid() == daemon


def test_a_deep_frame_without_readable_id_is_logged_not_answered() -> None:
    assert messages.parse_request(DEEP_ARRAY) == messages.Rejected(
        None, "the request is nested too deeply"
    )
    rejected = messages.parse_request(b'{"op":"x","a":' + DEEP_ARRAY + b',"id":"late"}')
    assert rejected == messages.Rejected("late", "the request is nested too deeply")


def test_a_lone_surrogate_id_is_echoed_as_valid_utf8_json() -> None:
    data = encode_frame(messages.failure("\ud800", "Unknown operation"))
    body = data[4:]
    assert json.loads(body.decode("utf-8"))["id"] == "\ud800"
