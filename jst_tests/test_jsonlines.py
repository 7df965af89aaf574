"""The line framing both control channels share (``jst/jsonlines.py``): each refuses bad
input with its own exception class, so each component's error handling keeps working."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from jst import control
from jst.service import channel

CHANNELS = [(control, control.ControlError), (channel, channel.ChannelError)]


@pytest.mark.parametrize(("module", "error"), CHANNELS, ids=["control", "service-channel"])
@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b"\xff\xfe",  # not UTF-8
        b"[" * 100_000,  # deeper than the JSON parser recurses: was uncaught on /control
        b'["v", 1]',
        b'{"op":"x"}',  # no version
        b'{"v":2,"op":"x"}',
    ],
    ids=["text", "bytes", "deep", "array", "unversioned", "v2"],
)
def test_a_bad_line_is_the_channels_own_error(
    module: ModuleType, error: type[Exception], line: bytes
) -> None:
    decoder: Any = module.LineDecoder()
    decoder.receive_data(line + b"\n")
    with pytest.raises(error):
        decoder.next_message()


@pytest.mark.parametrize(("module", "error"), CHANNELS, ids=["control", "service-channel"])
def test_a_line_without_its_end_is_refused_past_the_limit(
    module: ModuleType, error: type[Exception]
) -> None:
    decoder: Any = module.LineDecoder(max_line=100)
    decoder.receive_data(b'{"v":1,' + b" " * 93)  # 100 bytes: may still end
    assert decoder.next_message() is None
    decoder.receive_data(b" ")
    with pytest.raises(error, match="a line longer than 100 bytes"):
        decoder.next_message()


@pytest.mark.parametrize(
    ("module", "error", "line"),
    [
        (control, control.ControlError, control.encode(control.Applied(1))),
        (channel, channel.ChannelError, channel.encode({"id": 1, "op": "pick"})),
    ],
    ids=["control", "service-channel"],
)
def test_a_whole_line_over_the_limit_is_refused_too(
    module: ModuleType, error: type[Exception], line: bytes
) -> None:
    # Its newline in the same receive as the rest: the limit holds all the same.
    body = line.rstrip(b"\n")
    decoder: Any = module.LineDecoder(max_line=100)
    decoder.receive_data(body.ljust(100) + b"\n")  # 100 bytes, JSON's own blanks
    assert decoder.next_message() is not None
    decoder.receive_data(body.ljust(101) + b"\n")
    with pytest.raises(error, match="a line longer than 100 bytes"):
        decoder.next_message()


def test_service_channel_messages_round_trip_in_pieces() -> None:
    messages = [{"id": 1, "op": "pick"}, {"re": 1, "status": 200, "body": {"p": "/ü"}}]
    data = b"".join(channel.encode(m) for m in messages)
    assert data.startswith(b'{"v":1,"id":1,')
    decoder = channel.LineDecoder()
    got = []
    for i in range(0, len(data), 3):
        decoder.receive_data(data[i : i + 3])
        while (message := decoder.next_message()) is not None:
            got.append(message)
    assert got == [{"v": 1, **m} for m in messages]
