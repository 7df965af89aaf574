"""Parsing what jst writes as a strict client would: Python's ``json.loads`` also reads
``NaN``, ``Infinity`` and ``-Infinity``, which are not JSON and break other parsers."""

from __future__ import annotations

import json
from typing import Any


def strict_json(data: bytes) -> Any:
    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} in {data!r}: not valid JSON")

    return json.loads(data, parse_constant=refuse)
