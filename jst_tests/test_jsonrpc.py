"""The JSON-RPC 2.0 core of ``jst rpc`` (jst/ui/jsonrpc.py), without any I/O."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jst.ui import jsonrpc
from jst.ui.jsonrpc import Call, Param, Reply, RpcError
from jst_tests.strictjson import strict_json


def one(line: bytes) -> Call | Reply:
    parsed = jsonrpc.parse_line(line)
    assert not parsed.batch
    assert len(parsed.slots) == 1
    return parsed.slots[0]


def error_of(slot: Call | Reply) -> tuple[Any, int]:
    assert isinstance(slot, Reply)
    assert slot.error is not None
    return slot.id, slot.error.code


def test_a_request_becomes_a_call() -> None:
    slot = one(b'{"jsonrpc":"2.0","id":7,"method":"add_magnet","params":{"link":"x"}}')
    assert slot == Call("add_magnet", {"link": "x"}, 7)
    assert one(b'{"jsonrpc":"2.0","id":"a","method":"get_status"}') == Call("get_status", {}, "a")
    assert one(b'{"jsonrpc":"2.0","id":null,"method":"m","params":[1]}') == Call("m", [1], None)


def test_a_request_without_id_is_a_notification() -> None:
    slot = one(b'{"jsonrpc":"2.0","method":"get_status"}')
    assert isinstance(slot, Call)
    assert slot.notification


@pytest.mark.parametrize(
    "line",
    [b"", b"{", b"not json", b'{"a":1', b"\xff\xfe", b"[" * 100_000],
    ids=["empty", "brace", "words", "unterminated", "not-utf8", "deep"],
)
def test_what_is_not_json_is_a_parse_error(line: bytes) -> None:
    assert error_of(one(line)) == (None, jsonrpc.PARSE_ERROR)


@pytest.mark.parametrize(
    ("doc", "shown_id"),
    [
        (1, None),
        ("x", None),
        (None, None),
        ({}, None),
        ({"jsonrpc": "1.0", "id": 3, "method": "m"}, 3),
        ({"id": 3, "method": "m"}, 3),
        ({"jsonrpc": "2.0", "id": 3}, 3),
        ({"jsonrpc": "2.0", "id": 3, "method": 5}, 3),
        ({"jsonrpc": "2.0", "id": 3, "method": "m", "params": "p"}, 3),
        ({"jsonrpc": "2.0", "id": 3, "method": "m", "params": 1}, 3),
        ({"jsonrpc": "2.0", "id": True, "method": "m"}, None),
        ({"jsonrpc": "2.0", "id": {"a": 1}, "method": "m"}, None),
        ({"jsonrpc": "2.0", "id": [1], "method": "m"}, None),
    ],
)
def test_invalid_requests_are_answered_with_the_id_when_readable(doc: Any, shown_id: Any) -> None:
    assert error_of(one(json.dumps(doc).encode())) == (shown_id, jsonrpc.INVALID_REQUEST)


@pytest.mark.parametrize("id_text", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400"])
def test_an_id_that_is_no_json_number_is_an_invalid_request_with_id_null(id_text: bytes) -> None:
    slot = one(b'{"jsonrpc":"2.0","id":' + id_text + b',"method":"get_status"}')
    assert error_of(slot) == (None, jsonrpc.INVALID_REQUEST)
    assert isinstance(slot, Reply)
    assert strict_json(jsonrpc.encode_replies([slot], batch=False))["id"] is None
    # Nor is it echoed when the request is invalid for another reason.
    slot = one(b'{"jsonrpc":"1.0","id":' + id_text + b',"method":"get_status"}')
    assert error_of(slot) == (None, jsonrpc.INVALID_REQUEST)


def test_a_result_json_cannot_carry_is_answered_with_an_internal_error() -> None:
    replies = [Reply(1, result={"rate": float("nan")}), Reply(2, result=[float("inf")]),
               Reply("x", result=[1.5])]  # fmt: skip
    batch = strict_json(jsonrpc.encode_replies(replies, batch=True))
    assert [(r["id"], r["error"]["code"]) for r in batch[:2]] == [
        (1, jsonrpc.INTERNAL_ERROR),
        (2, jsonrpc.INTERNAL_ERROR),
    ]
    assert batch[2] == {"jsonrpc": "2.0", "id": "x", "result": [1.5]}
    single = strict_json(jsonrpc.encode_replies(replies[:1], batch=False))
    assert (single["id"], single["error"]["code"]) == (1, jsonrpc.INTERNAL_ERROR)


def test_an_empty_batch_is_one_invalid_request() -> None:
    assert error_of(one(b"[]")) == (None, jsonrpc.INVALID_REQUEST)


def test_a_batch_keeps_its_order_and_mixes_calls_and_errors() -> None:
    line = json.dumps(
        [
            {"jsonrpc": "2.0", "id": 1, "method": "a"},
            1,
            {"jsonrpc": "2.0", "method": "notify"},
            {"jsonrpc": "2.0", "id": 2, "method": "b", "params": [1, 2]},
        ]
    ).encode()
    parsed = jsonrpc.parse_line(line)
    assert parsed.batch
    assert parsed.slots[0] == Call("a", {}, 1)
    assert error_of(parsed.slots[1]) == (None, jsonrpc.INVALID_REQUEST)
    assert isinstance(parsed.slots[2], Call)
    assert parsed.slots[2].notification
    assert parsed.slots[3] == Call("b", [1, 2], 2)


def test_a_batch_is_bounded() -> None:
    line = json.dumps([{"jsonrpc": "2.0", "id": i, "method": "m"} for i in range(101)]).encode()
    assert error_of(one(line)) == (None, jsonrpc.INVALID_REQUEST)


def test_replies_encode_to_one_line() -> None:
    ok = Reply(1, result={"a": "é\n"})
    bad = jsonrpc.error_reply("x", jsonrpc.INVALID_PARAMS, "Invalid params", "missing param: link")
    single = jsonrpc.encode_replies([ok], batch=False)
    assert single.endswith(b"\n")
    assert single.count(b"\n") == 1
    assert json.loads(single) == {"jsonrpc": "2.0", "id": 1, "result": {"a": "é\n"}}
    batch = json.loads(jsonrpc.encode_replies([ok, bad], batch=True))
    assert batch[1] == {
        "jsonrpc": "2.0",
        "id": "x",
        "error": {
            "code": -32602,
            "message": "Invalid params",
            "data": {"reason": "missing param: link"},
        },
    }
    assert jsonrpc.encode_replies([], batch=True) == b""  # a batch of notifications only


SIGNATURE = (Param("link", str), Param("wait", (int, float), required=False))


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({}, "missing param: link"),
        ({"link": 5}, "link must be a string"),
        ({"link": "m", "wait": "5"}, "wait must be an integer or a number"),
        ({"link": "m", "wait": True}, "wait must be an integer or a number"),
        ({"link": "m", "other": 1}, "unknown param(s): other"),
        (["m", 1, 2], "at most 2 positional params"),
    ],
)
def test_params_that_do_not_fit_say_why(params: Any, reason: str) -> None:
    with pytest.raises(RpcError) as info:
        jsonrpc.check_params(params, SIGNATURE)
    assert info.value.code == jsonrpc.INVALID_PARAMS
    assert info.value.reason == reason


def test_params_by_name_or_position() -> None:
    assert jsonrpc.check_params({"link": "m"}, SIGNATURE) == {"link": "m"}
    assert jsonrpc.check_params(["m", 2.5], SIGNATURE) == {"link": "m", "wait": 2.5}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
requestish = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": st.sampled_from(["2.0", "1.0", 2]),
        "id": json_values,
        "method": st.sampled_from(["get_status", "add_magnet", ""]) | json_values,
        "params": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=200)
    | st.builds(json.dumps, requestish | st.lists(requestish, max_size=5)).map(str.encode)
)
def test_any_line_parses_into_answers_that_encode(line: bytes) -> None:
    parsed = jsonrpc.parse_line(line.replace(b"\n", b" "))
    replies = [
        s if isinstance(s, Reply) else Reply(s.id, result=None)
        for s in parsed.slots
        if isinstance(s, Reply) or not s.notification
    ]
    data = jsonrpc.encode_replies(replies, parsed.batch)
    if data:
        assert data.count(b"\n") == 1
        doc = strict_json(data)
        for reply in doc if isinstance(doc, list) else [doc]:
            assert reply["jsonrpc"] == "2.0"
            assert ("result" in reply) != ("error" in reply)


def test_a_lone_surrogate_in_a_reply_still_encodes_to_valid_json() -> None:
    line = jsonrpc.encode_replies([Reply("\udcff", result={"path": "/x/\udcff é"})], batch=False)
    assert line.count(b"\n") == 1
    line.decode("ascii")  # everything escaped
    assert json.loads(line)["result"] == {"path": "/x/\udcff é"}
