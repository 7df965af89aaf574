"""rpc-info.json: lenient reading, lossless writing (§3.2, §9.17, §9.28)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jst.rpcinfo import RpcInfoError, dump_rpc_info, parse_rpc_info

PROFILE: dict[str, Any] = {
    "extension_id": "dbokmlpefliilbjldladbimlcfgbolhk",
    "install_id": "6f1c8e2e-2a7b-4c55-9d0e-5f3a2b1c0d9e",
    "pid": 31257,
    "port": 38411,
    "token": "0b5d2c9e",
    "started": 1764074065,
    "last_used": 1764074065,
    "browser": {"name": "chrome", "binary": "/opt/google/chrome/chrome",
                "extension_id": "dbokmlpefliilbjldladbimlcfgbolhk"},
    "download_roots": [
        {"key": "3f2a9c0d1e4b5a67", "path": "/home/u/Videos", "display_name": "Videos",
         "removable": False, "last_stat_ok": True, "last_checked": 1764074011000}
    ],
}  # fmt: skip


def doc(*profiles: Any, **extra: Any) -> bytes:
    return json.dumps({"version": 1, "profiles": list(profiles), **extra}).encode()


def test_the_original_format_round_trips_byte_for_byte() -> None:
    original = json.dumps({"version": 1, "profiles": [PROFILE]}, separators=(",", ":")).encode()
    assert dump_rpc_info(parse_rpc_info(original)) == original


def test_pretty_printed_files_are_read() -> None:
    info = parse_rpc_info(json.dumps({"version": 1, "profiles": [PROFILE]}, indent=2).encode())
    assert info.profiles[0].download_roots[0].path == "/home/u/Videos"


def test_unknown_keys_survive_a_rewrite() -> None:
    profile = {**PROFILE, "salt": "abc", "browser": {**PROFILE["browser"], "channel": "beta"}}
    profile["download_roots"] = [{**PROFILE["download_roots"][0], "token": "t"}]
    out = json.loads(dump_rpc_info(parse_rpc_info(doc(profile, writer="other-tool"))))
    assert out["writer"] == "other-tool"
    assert out["profiles"][0]["salt"] == "abc"
    assert out["profiles"][0]["browser"]["channel"] == "beta"
    assert out["profiles"][0]["download_roots"][0]["token"] == "t"
    assert list(out["profiles"][0])[:9] == list(PROFILE)


@pytest.mark.parametrize(
    "broken",
    [
        {k: v for k, v in PROFILE.items() if k != "pid"},
        {**PROFILE, "pid": True},
        {**PROFILE, "pid": "31257"},
        {**PROFILE, "port": 70000},
        {**PROFILE, "started": -1},
        {**PROFILE, "browser": None},
        {**PROFILE, "download_roots": {}},
        "not an object",
    ],
)
def test_a_malformed_profile_is_skipped_but_kept_for_rewrites(broken: Any) -> None:
    good = {**PROFILE, "install_id": "good"}
    info = parse_rpc_info(doc(broken, good))
    assert [p.install_id for p in info.profiles] == ["good"]
    assert json.loads(dump_rpc_info(info))["profiles"][1] == broken


def test_a_malformed_root_is_skipped_but_kept() -> None:
    bad_root = {"key": 5, "path": "/x"}
    profile = {**PROFILE, "download_roots": [bad_root, *PROFILE["download_roots"]]}
    info = parse_rpc_info(doc(profile))
    assert [r.key for r in info.profiles[0].download_roots] == ["3f2a9c0d1e4b5a67"]
    assert bad_root in json.loads(dump_rpc_info(info))["profiles"][0]["download_roots"]


def test_missing_optional_ids_are_null() -> None:
    profile = {k: v for k, v in PROFILE.items() if k not in ("extension_id", "install_id")}
    info = parse_rpc_info(doc(profile))
    assert (info.profiles[0].extension_id, info.profiles[0].install_id) == (None, None)


def test_profile_lookup_by_install_id_takes_the_first() -> None:
    a = {**PROFILE, "pid": 1}
    b = {**PROFILE, "pid": 2}
    info = parse_rpc_info(doc(a, b))
    found = info.profile_for_install_id(PROFILE["install_id"])
    assert found is not None
    assert found.pid == 1
    assert info.profile_for_install_id("nope") is None


@pytest.mark.parametrize(
    "data", [b"", b"{", b"[]", b'"x"', b'{"profiles": 3}', b'{"version": -1}', b"\xff\xfe"]
)
def test_unusable_documents_raise_rpc_info_error(data: bytes) -> None:
    with pytest.raises(RpcInfoError):
        parse_rpc_info(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(
    st.lists(
        st.one_of(json_values, st.fixed_dictionaries({k: json_values for k in PROFILE})), max_size=4
    )
)
def test_any_profiles_array_parses_and_rewrites_without_loss(profiles: list[Any]) -> None:
    info = parse_rpc_info(doc(*profiles))
    once = dump_rpc_info(info)
    rewritten = json.loads(once)["profiles"]
    assert len(rewritten) == len(profiles)
    for unparsed in info.unparsed_profiles:
        assert unparsed in rewritten
    assert dump_rpc_info(parse_rpc_info(once)) == once  # a rewrite of a rewrite changes nothing
