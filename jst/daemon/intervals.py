"""A set of byte offsets kept as merged half-open intervals (STREAMING.md §1, §2).

Invariant: ``_starts`` and ``_ends`` hold disjoint, non-touching intervals
``[_starts[i], _ends[i])`` sorted by start, none empty. Touching intervals are merged
(``[0, 5)`` + ``[5, 9)`` is ``[0, 9)``), so "the available run that contains ``pos``"
is one bisect away and a file delivered piece by piece in order stays one interval.
Both lists are sorted (disjointness makes the ends sorted too), which is what lets
``add`` find the intervals a new range overlaps or touches with two bisects.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator


class IntervalSet:
    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def add(self, start: int, end: int) -> bool:
        """Add ``[start, end)``; True if the set grew."""
        if start >= end:
            return False
        starts, ends = self._starts, self._ends
        first = bisect_left(ends, start)  # the first interval ending at or after start
        last = bisect_right(starts, end)  # one past the last starting at or before end
        if first < last:
            if starts[first] <= start and end <= ends[first]:
                return False  # already inside one interval
            start = min(start, starts[first])
            end = max(end, ends[last - 1])
        starts[first:last] = [start]
        ends[first:last] = [end]
        return True

    def covering_end(self, pos: int) -> int | None:
        """The end of the interval that contains ``pos``, or None if ``pos`` is missing."""
        index = bisect_right(self._starts, pos) - 1
        if index >= 0 and self._ends[index] > pos:
            return self._ends[index]
        return None

    def next_start(self, pos: int) -> int | None:
        """The start of the first interval that begins after ``pos``, if any."""
        index = bisect_right(self._starts, pos)
        return self._starts[index] if index < len(self._starts) else None

    def __contains__(self, pos: object) -> bool:
        return isinstance(pos, int) and self.covering_end(pos) is not None

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(self._starts, self._ends, strict=True)

    def __len__(self) -> int:
        return len(self._starts)

    def __repr__(self) -> str:
        return f"IntervalSet({list(self)!r})"
