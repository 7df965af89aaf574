"""Sans-I/O rules: path resolution (§5.6, §9.11) and header parsing (§5.8.1), property-tested."""

from __future__ import annotations

import base64
import contextlib
import json
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jst.daemon.errors import BadRequest
from jst.daemon.http import CorsPolicy, Request, is_authorized, parse_u64, path_from_header
from jst.daemon.paths import InvalidPath, is_within, resolve

ROOT = "/srv/downloads"


def request(*headers: tuple[bytes, bytes]) -> Request:
    return Request(method="GET", raw_path=b"/x", query=b"", headers=headers)


@pytest.mark.parametrize(
    ("rel", "expected"),
    [
        ("", ROOT),
        ("a/b.txt", f"{ROOT}/a/b.txt"),
        ("a\\b", f"{ROOT}/a/b"),
        ("./a//b/", f"{ROOT}/a/b"),
        ("a..b", f"{ROOT}/a..b"),
        ("...", f"{ROOT}/..."),
    ],
)
def test_resolution_of_legal_paths(rel: str, expected: str) -> None:
    assert resolve(ROOT, rel).path == expected


@pytest.mark.parametrize(
    "rel", ["..", "../x", "a/../b", "a\\..", "/etc/passwd", "\\\\srv\\share", "C:\\x", "d:", "a\0b"]
)
def test_refused_paths(rel: str) -> None:
    with pytest.raises(InvalidPath):
        resolve(ROOT, rel)


def test_depth_and_length_limits() -> None:
    from jst.daemon.paths import MAX_DEPTH, PATH_MAX

    assert len(resolve(ROOT, "/".join(["a"] * MAX_DEPTH)).parts) == MAX_DEPTH
    for rel in (
        "/".join(["a"] * (MAX_DEPTH + 1)),  # too deep
        "n" * (PATH_MAX - len(ROOT)),  # too long with its root
        "é" * (PATH_MAX // 2),  # too long in bytes, not in characters
        json.loads('"lone \\ud800 surrogate"'),  # a JSON body may hold one
    ):
        with pytest.raises(InvalidPath):
            resolve(ROOT, rel)
    assert resolve(ROOT, "n" * (PATH_MAX - len(ROOT) - 2)).parts


@given(st.text())
def test_no_path_string_escapes_the_root(rel: str) -> None:
    try:
        target = resolve(ROOT, rel)
    except InvalidPath:
        return
    assert is_within(os.path.normpath(target.path), ROOT)
    assert ".." not in target.parts


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_u64_values_parse(n: int) -> None:
    assert parse_u64(str(n).encode()) == n
    assert parse_u64(b"+" + str(n).encode()) == n


@given(st.binary(max_size=24))
def test_u64_parsing_matches_rust_rules(raw: bytes) -> None:
    expected = None
    body = raw[1:] if raw.startswith(b"+") else raw
    if body and all(48 <= b <= 57 for b in body) and int(body) < 2**64:
        expected = int(body)
    assert parse_u64(raw) == expected


@given(st.text())
def test_path_header_round_trips_any_utf8_path(path: str) -> None:
    encoded = base64.b64encode(path.encode("utf-8"))
    assert path_from_header(request((b"x-path-base64", encoded))) == path


@given(st.binary(max_size=64))
def test_path_header_never_fails_other_than_400(raw: bytes) -> None:
    with contextlib.suppress(BadRequest):
        path_from_header(request((b"x-path-base64", raw)))


def test_auth_rules() -> None:
    token = b"secret"
    assert is_authorized(request((b"x-jst-auth", b"secret")), token)
    assert is_authorized(request((b"authorization", b"Bearer secret")), token)
    assert not is_authorized(request((b"authorization", b"Basic secret")), token)
    assert not is_authorized(
        request((b"x-jst-auth", b"nope"), (b"authorization", b"Bearer secret")), token
    )
    # A non-ASCII X-JST-Auth is ignored (the original's to_str() fails), Bearer decides.
    assert is_authorized(
        request((b"x-jst-auth", b"\xff"), (b"authorization", b"Bearer secret")), token
    )
    assert not is_authorized(request(), token)


def test_cors_follows_the_current_extension_id() -> None:
    cors = CorsPolicy.from_dev_origins(" http://dev:3000 , ,http://dev:3001")
    assert cors.allows(b"http://dev:3000", None)
    assert cors.allows(b"http://dev:3001", None)
    assert cors.allows(b"https://jstorrent.com", None)
    assert not cors.allows(b"chrome-extension://abc", None)
    assert cors.allows(b"chrome-extension://abc", "abc")
    assert not cors.allows(b"chrome-extension://abcd", "abc")
