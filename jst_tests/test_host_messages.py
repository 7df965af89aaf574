"""Native Messaging requests and responses (§2.2–2.5), without I/O."""

from __future__ import annotations

import pytest

from jst.host import messages as m
from jst.host.nm import encode_json


def test_the_extensions_handshake_parses() -> None:
    body = b'{"op":"handshake","extensionId":"ext","installId":"inst","id":"u1"}'
    assert m.parse_request(body) == m.Handshake("u1", "ext", "inst")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"op":"pickDownloadDirectory","id":"a"}', m.PickDownloadDirectory("a")),
        (b'{"op":"deleteDownloadRoot","key":"k","id":"a"}', m.DeleteDownloadRoot("a", "k")),
        (
            b'{"op":"openFile","rootKey":"k","path":"T/f","id":"a","extra":1}',
            m.OpenPath("a", "k", "T/f", reveal=False),
        ),
        (
            b'{"op":"revealInFolder","rootKey":"k","path":"T","id":"a"}',
            m.OpenPath("a", "k", "T", reveal=True),
        ),
    ],
)
def test_every_operation_parses(body: bytes, expected: m.Request) -> None:
    assert m.parse_request(body) == expected


@pytest.mark.parametrize(
    ("body", "request_id"),
    [
        (b"\xff\xfe", None),
        (b"[1,2]", None),
        (b'{"op":"handshake"}', None),
        (b'{"op":"handshake","id":5}', None),
        (b'{"op":"Handshake","id":"a"}', "a"),  # case-sensitive
        (b'{"id":"a"}', "a"),
        (b'{"op":"deleteDownloadRoot","id":"a"}', "a"),
        (b'{"op":"openFile","rootKey":"k","path":null,"id":"a"}', "a"),
        (b'{"op":"handshake","extensionId":"e","installId":7,"id":"a"}', "a"),
    ],
)
def test_malformed_requests_are_rejected_with_their_id_if_any(
    body: bytes, request_id: str | None
) -> None:
    rejected = m.parse_request(body)
    assert isinstance(rejected, m.Rejected)
    assert rejected.id == request_id
    assert rejected.reason


def test_response_shapes_and_key_order() -> None:
    assert encode_json(m.success("1")) == b'{"id":"1","ok":true,"type":"Empty"}'
    assert (
        encode_json(m.failure("1", "Root not found: k"))
        == b'{"id":"1","ok":false,"error":"Root not found: k","type":"Empty"}'
    )
    assert encode_json(m.root_removed("1", "k")) == (
        b'{"id":"1","ok":true,"type":"RootRemoved","payload":{"key":"k"}}'
    )
    assert encode_json(m.daemon_info("1", 5, "t", "v", [])) == (
        b'{"id":"1","ok":true,"type":"DaemonInfo",'
        b'"payload":{"port":5,"token":"t","version":"v","roots":[]}}'
    )


def test_event_shapes() -> None:
    assert encode_json(m.magnet_added("magnet:?xt=1")) == (
        b'{"event":"MagnetAdded","payload":{"link":"magnet:?xt=1"}}'
    )
    assert encode_json(m.torrent_added("a.torrent", "QUI=")) == (
        b'{"event":"TorrentAdded","payload":{"name":"a.torrent","infohash":"",'
        b'"contentsBase64":"QUI="}}'
    )
