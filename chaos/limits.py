"""Which N could have been in effect when: the changes of N a run made (``PUT /agents/limits``,
recorded as ``limits`` ops) and what they allow the checker to say.

The rule: a change takes effect at an unknown instant between its request's send and its
answer (the API answers once every coordinator follows it); a change that got no answer, or a
5xx, may have taken effect at any instant after it was sent, or never; a change answered 4xx
changed nothing. So N = v was possibly in effect at some instant of [a, b] when v is the run's
own N or a change to v sent by b, unless a change sent after v's was answered (certainly in
effect, and later) by a: the checker then takes the largest such v, the bound that can only make
a property *easier* to pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from chaos.history import History


@dataclass(frozen=True)
class LimitChange:
    slots: int
    sent: float
    # When it was certainly in effect: its answer; inf when it got none (or a 5xx).
    answered: float


def limit_changes(history: History) -> list[LimitChange]:
    """Every change of N that may have taken effect, in the order they were sent."""
    changes: list[LimitChange] = []
    for op in history.ops:
        slots = (op.request.get("body") or {}).get("slots") if op.kind == "limits" else None
        if not isinstance(slots, int) or (op.status is not None and 400 <= op.status < 500):
            continue
        answered = op.ended if op.status is not None and op.status < 300 else math.inf
        changes.append(LimitChange(slots=slots, sent=op.started, answered=answered))
    return sorted(changes, key=lambda change: change.sent)


def possible_limits(
    initial: int, changes: Sequence[LimitChange], start: float, end: float
) -> set[int]:
    """Every N that could have been in effect at some instant of [start, end]."""
    candidates: Iterable[LimitChange] = [LimitChange(initial, -math.inf, -math.inf), *changes]
    return {
        candidate.slots
        for candidate in candidates
        if candidate.sent <= end
        and not any(
            later.sent > candidate.answered and later.answered <= start for later in changes
        )
    }


def most_allowed(initial: int, changes: Sequence[LimitChange], start: float, end: float) -> int:
    """The largest N that could have been in effect at some instant of [start, end]."""
    if not changes:
        return initial
    return max(possible_limits(initial, changes, start, end))
