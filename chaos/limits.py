"""Which limits could have been in effect when: the changes a run made (``PUT /agents/limits``,
recorded as ``limits`` ops; ``POST /agents/scopes/{scope}/pause`` and ``/resume``, recorded as
``pause`` and ``resume`` ops) and what they allow the checker to say.

The rule: a change takes effect at an unknown instant between its request's send and its answer (the
API answers once every coordinator follows it); a change that got no answer, or a 5xx, may have
taken effect at any instant after it was sent, or never; a change answered 4xx, or that could not
connect to its API, changed nothing. So a value v was possibly in effect at some instant of [a, b]
when v is the run's own or a change to v sent by b, unless a change sent after v's had settled
was answered (certainly in effect, and later) by a. A change has settled once it is in the
record or never will be: at its answer, or for one with no answer when the API's bound for
making a change has passed (see ``_settled``: the client's longest hand-over of the request,
or the end of a pause of its API, then the API's deadline for the record, see
``api.routes.limits._changed``). A value is *certainly* in effect throughout [a, b] when it is
the only one possible there. For N the checker takes the largest possible, the bound that can only
make a property *easier* to pass; for the queue's order (fair shares) and a pause, only what is
certain is held against the product.

A ``PUT /agents/limits`` writes the whole limits as the API read them, with the fields it names
over them: one that names ``fair_shares`` sets the order to what it names; one that does not
(the changes of runs from before fair shares) writes back what it read, which is unknown, so its
order counts as any (``None``), unless no change of the run ever named ``fair_shares``: then fair
shares were off throughout.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from agent_runner.contract import ScopeLimits
from chaos.calls import REQUEST_TIMEOUT_SECONDS
from chaos.history import History, Op

T = TypeVar("T")


@dataclass(frozen=True)
class Change(Generic[T]):
    value: T
    sent: float
    # When it was certainly in effect: its answer; inf when it got none (or a 5xx).
    answered: float
    # By when it had reached the record or never would: its answer, or for one with none the
    # latest the API makes a change by (inf: whenever, as runs from before that bound).
    settled: float = math.inf

    def __post_init__(self) -> None:
        if self.answered < self.settled:
            object.__setattr__(self, "settled", self.answered)


@dataclass(frozen=True)
class LimitChange:
    slots: int
    sent: float
    answered: float
    # As Change's (capped at the answer when it is made one, see possible_limits).
    settled: float = math.inf


@dataclass(frozen=True)
class FairOrder:
    """The queue's order a change set: fair shares on or off, and the weights (sorted)."""

    fair_shares: bool
    weights: tuple[tuple[str, int], ...] = ()


# The order every run begins with (the deployment's default): fair shares off.
FAIR_OFF = FairOrder(fair_shares=False)


# The longest a client takes to hand a request over to its API: httpx's pool, connect and write
# phases, each with its own timeout.
HAND_OVER_SECONDS = 3 * REQUEST_TIMEOUT_SECONDS
# A request that could not connect was never sent (httpx.ConnectError: the connection failed).
NEVER_SENT = "connection (ConnectError)"


def _took_effect(op: Op) -> float | None:
    """When the change certainly was in effect (inf: perhaps never); None: it changed nothing."""
    if (op.status is not None and 400 <= op.status < 500) or op.error == NEVER_SENT:
        return None
    return op.ended if op.status is not None and op.status < 300 else math.inf


def _settled(history: History, op: Op) -> float:
    """By when the change had reached the record or never would: the API makes a change
    within ``limits_made_within_seconds`` of taking it up, or never. It takes it up once the
    request has reached it: within the client's wait to hand it over (a pool, a connect and a
    write phase of REQUEST_TIMEOUT_SECONDS each), or, when that API was paused meanwhile, once
    it resumes (its check that the caller has gone can miss the caller's close)."""
    within = history.config.limits_made_within_seconds
    if within is None:
        return math.inf
    taken_up = op.started + HAND_OVER_SECONDS
    resumed = [
        fault.ended
        for fault in history.faults
        if fault.kind == "pause-api" and f"api{op.api}" in fault.affects
        and fault.started <= taken_up and fault.ended >= op.started
    ]  # fmt: skip
    return max([taken_up, *resumed]) + within


def limit_changes(history: History) -> list[LimitChange]:
    """Every change of N that may have taken effect, in the order they were sent."""
    changes: list[LimitChange] = []
    for op in history.ops:
        slots = (op.request.get("body") or {}).get("slots") if op.kind == "limits" else None
        answered = _took_effect(op)
        if isinstance(slots, int) and answered is not None:
            changes.append(LimitChange(slots, op.started, answered, _settled(history, op)))
    return sorted(changes, key=lambda change: change.sent)


def order_changes(history: History) -> list[Change[FairOrder | None]]:
    """Every change of the queue's order that may have taken effect, in the order sent (None:
    an order not known, see the module's rule); none when no change named ``fair_shares``."""
    limits = [op for op in history.ops if op.kind == "limits"]
    if not any("fair_shares" in (op.request.get("body") or {}) for op in limits):
        return []
    changes: list[Change[FairOrder | None]] = []
    for op in limits:
        body = op.request.get("body") or {}
        answered = _took_effect(op)
        if answered is None:
            continue
        order: FairOrder | None = None
        if isinstance(body.get("fair_shares"), bool) and isinstance(body.get("weights"), dict):
            order = FairOrder(body["fair_shares"], tuple(sorted(body["weights"].items())))
        changes.append(Change(order, op.started, answered, _settled(history, op)))
    return sorted(changes, key=lambda change: change.sent)


def aging_floor(history: History) -> float:
    """The shortest ``aging_seconds`` that could have been in effect at any time of the run."""
    sent = [
        float(aging)
        for op in history.ops
        if op.kind == "limits"
        and isinstance(aging := (op.request.get("body") or {}).get("aging_seconds"), int | float)
    ]
    return min([ScopeLimits().aging_seconds, *sent])


def pause_changes(history: History, scope: str) -> list[Change[bool]]:
    """Every pause (True) and resume (False) of ``scope`` that may have taken effect."""
    changes: list[Change[bool]] = []
    for op in history.ops:
        if op.kind not in ("pause", "resume") or op.request.get("scope") != scope:
            continue
        answered = _took_effect(op)
        if answered is not None:
            changes.append(Change(op.kind == "pause", op.started, answered, _settled(history, op)))
    return sorted(changes, key=lambda change: change.sent)


def paused_scopes(history: History) -> list[str]:
    return sorted({str(op.request.get("scope")) for op in history.ops if op.kind == "pause"})


def possible_values(initial: T, changes: Sequence[Change[T]], start: float, end: float) -> list[T]:
    """Every value that could have been in effect at some instant of [start, end] (each once)."""
    candidates: Iterable[Change[T]] = [Change(initial, -math.inf, -math.inf), *changes]
    found: list[T] = []
    for candidate in candidates:
        superseded = any(
            later.sent > candidate.settled and later.answered <= start for later in changes
        )
        if candidate.sent <= end and not superseded and candidate.value not in found:
            found.append(candidate.value)
    return found


def possible_limits(
    initial: int, changes: Sequence[LimitChange], start: float, end: float
) -> set[int]:
    """Every N that could have been in effect at some instant of [start, end]."""
    generic = [
        Change(change.slots, change.sent, change.answered, change.settled) for change in changes
    ]
    return set(possible_values(initial, generic, start, end))


def most_allowed(initial: int, changes: Sequence[LimitChange], start: float, end: float) -> int:
    """The largest N that could have been in effect at some instant of [start, end]."""
    if not changes:
        return initial
    return max(possible_limits(initial, changes, start, end))
