"""Arithmetic on sets of time intervals: merging them, asking whether an instant is inside, and
walking back from an instant through a given amount of time *outside* them (how far back "4 s
of time while the server was up" reaches across an outage).

Pure functions; an interval is a ``(start, end)`` pair of epoch seconds, ``start <= end``.
"""

from __future__ import annotations

from collections.abc import Iterable

Interval = tuple[float, float]


def merged(intervals: Iterable[Interval]) -> list[Interval]:
    result: list[Interval] = []
    for start, end in sorted(intervals):
        if result and start <= result[-1][1]:
            result[-1] = (result[-1][0], max(result[-1][1], end))
        else:
            result.append((start, end))
    return result


def contains(intervals: Iterable[Interval], at: float) -> bool:
    return any(start <= at <= end for start, end in intervals)


def overlaps(intervals: Iterable[Interval], start: float, end: float) -> bool:
    return any(start <= other_end and other_start <= end for other_start, other_end in intervals)


def walk_back(at: float, seconds: float, blocked: list[Interval]) -> float:
    """The latest instant ``t <= at`` such that ``[t, at]`` holds ``seconds`` of time outside
    ``blocked`` (merged, sorted)."""
    remaining = seconds
    cursor = at
    for start, end in reversed(blocked):
        if start >= cursor:
            continue
        end = min(end, cursor)
        free = cursor - end
        if free >= remaining:
            return cursor - remaining
        remaining -= free
        cursor = start
    return cursor - remaining
