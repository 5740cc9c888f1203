"""Property (o): fair shares. Two fairness keys weighted 3:1 (:data:`chaos.fair.WEIGHTS`), both
backlogged, get slots in that ratio: over every 100 consecutive grants to them, the heavier
key's share is within 10 % of its weight's share (0.75 +- 0.075; each key's share within 0.075
of its own). A stretch of fewer than 100 such grants, but at least :data:`MIN_GRANTS`, is
judged as one window.

Only what is certain counts. A stretch is a run of consecutive grants to the keys (by the
coordinator's exact grant time, :mod:`chaos.grants`; ties in one coordinator task in any order)
in one scope, where between each grant and the next:

- fair shares were certainly on with those weights (:mod:`chaos.limits`: no change that could
  have turned them off or changed the weights may have been in effect);
- each key certainly had a run waiting throughout: a run waits from its 202 (queued) until its
  grant, or the last evidence it still waited (:func:`chaos.check_fifo.waited_until`);
- no run of the keys was granted other than as an ``enqueue`` of the stretch's rank that waited
  less than ``aging_seconds`` (the shortest that could have been in effect), known to the
  millisecond: such a grant (a start at once, an aged run, one known only from its execution's
  start) ends the stretch.

A start of the keys that no answer named (no 202; retried with its key in vain) may have made a
run all the same; it would be granted after its send and, in order within its key, before any
run of its key sent after its request ended. Each such run may add one grant to its key in the
windows it may fall in: a window fails only if no such count brings it within the tolerance.

What can still move the ratio a little, and stays inside the tolerance: the grants of runs of a
better rank (a ``replace``; the feeders send priority 1, so nothing else outranks them) move the
round-robin's clock past the keys' turns, and a grant whose start found its slot held from
outside is made again (its key took two turns for one grant).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from chaos.facts import (
    Accepted,
    fair_key_of,
    priority_of,
    scope_of,
    stamp,
    start_body,
    start_key,
)
from chaos.grants import EXACT, Grant, GrantOrder
from chaos.history import History
from chaos.intervals import Interval, merged
from chaos.limits import FAIR_OFF, Change, FairOrder, possible_values
from chaos.verdicts import PropertyResult

NAME = "fair"
TITLE = "fair shares: backlogged keys weighted 3:1 get 0.75 +- 0.075 of 100 grants"
WINDOW = 100
MIN_GRANTS = 40
# Of the heaviest key's share: each key's share may be off by this much of it.
TOLERANCE = 0.1


@dataclass(frozen=True)
class Unnamed:
    """A start of a fairness key that no answer named (it may have made a run)."""

    fair_key: str
    scope: str
    rank: int
    sent: float
    ended: float


def unnamed_starts(history: History, accepted: Mapping[str, Accepted]) -> list[Unnamed]:
    """Starts with a ``fairness_key`` that may have made a run no 202 named: unkeyed ones that
    got no 202, and keys none of whose starts got one."""
    named_keys = {run.key for run in accepted.values() if run.key is not None}
    found: list[Unnamed] = []
    seen: set[str] = set()
    for op in history.ops:
        body = start_body(op)
        if op.kind != "start" or "fairness_key" not in body or op.status == 202:
            continue
        if op.status is not None and 400 <= op.status < 500:
            continue
        key = start_key(op)
        if key is not None and (key in named_keys or key in seen):
            continue
        if key is not None:
            seen.add(key)
        scope = scope_of(history.config.scope, body.get("agent_type"), body.get("user_id"))
        rank = 0 if body.get("on_busy") == "replace" else priority_of(body)
        found.append(Unnamed(fair_key_of(body), scope, rank, op.started, op.ended))
    return found


def _covered(spans: list[Interval], start: float, end: float) -> bool:
    return any(begin <= start and end <= until for begin, until in spans)


def check_fair(
    accepted: Mapping[str, Accepted],
    grants: GrantOrder,
    waited: Mapping[str, tuple[float, str]],
    changes: Sequence[Change[FairOrder | None]],
    aging_seconds: float,
    unnamed: Sequence[Unnamed] = (),
) -> PropertyResult:
    """``changes``: the changes of the queue's order (:func:`chaos.limits.order_changes`);
    ``aging_seconds``: the shortest that could have been in effect."""
    weights = _weights(changes)
    if len(weights) < 2:
        return PropertyResult(
            name=NAME, title=TITLE, checked=0, notes=["fair shares were never on with two keys"]
        )
    violations: list[str] = []
    notes: list[str] = []
    judged: set[str] = set()
    windows = 0
    shares: list[float] = []
    lengths: list[int] = []
    heavy = max(weights, key=lambda key: weights[key])
    for scope, scope_grants in sorted(grants.items()):
        members = {
            run_id: run
            for run_id, run in accepted.items()
            if run.scope == scope and run.fair_key in weights
        }
        if not members:
            continue
        ours = [grant for grant in scope_grants if grant.run_id in members]
        usable = [grant for grant in ours if _usable(members[grant.run_id], grant, aging_seconds)]
        breakers = [grant for grant in ours if grant not in usable]
        waiting = _waiting(members, waited, weights)
        hidden = _hidden(unnamed, scope, members, ours)
        usable.sort(key=lambda grant: (grant.latest, grant.run_id))
        for stretch in _stretches(usable, members, breakers, waiting, changes, weights):
            lengths.append(len(stretch))
            if len(stretch) < MIN_GRANTS:
                continue
            judged.update(grant.run_id for grant in stretch)
            size = min(WINDOW, len(stretch))
            failed: list[str] = []
            for first in range(len(stretch) - size + 1):
                window = stretch[first : first + size]
                windows += 1
                counts = Counter(members[grant.run_id].fair_key for grant in window)
                shares.append(counts[heavy] / size)
                problem = _judge(counts, size, weights, hidden, window[0], window[-1])
                if problem is not None:
                    failed.append(f"{scope}: grants {stamp(window[0].latest)} to "
                                  f"{stamp(window[-1].latest)}: {problem}")  # fmt: skip
            if failed:
                violations.append(
                    failed[0]
                    + (f" (and {len(failed) - 1} more windows)" if len(failed) > 1 else "")
                )
    notes.append(f"weights: {weights}; stretches of grants to them: {sorted(lengths) or 'none'}")
    notes.append(
        f"grants judged: {len(judged)} in {windows} windows of up to {WINDOW}; "
        f"{heavy}'s share from {min(shares, default=0):.2f} to {max(shares, default=0):.2f}"
    )
    if not judged:
        notes.append(f"no stretch of {MIN_GRANTS} grants with both keys backlogged: nothing judged")
    return PropertyResult(
        name=NAME, title=TITLE, checked=len(judged), violations=violations, notes=notes
    )


def _weights(changes: Sequence[Change[FairOrder | None]]) -> dict[str, int]:
    """The weights of the fair shares the run turned on (the last change that named them)."""
    named = [change.value for change in changes if change.value and change.value.fair_shares]
    return dict(named[-1].weights) if named else {}


def _usable(run: Accepted, grant: Grant, aging_seconds: float) -> bool:
    exact = grant.source == EXACT and grant.earliest == grant.latest
    waited = run.queue_position is not None and run.on_busy == "enqueue"
    return exact and waited and grant.latest - run.sent < aging_seconds


def _waiting(
    members: Mapping[str, Accepted],
    waited: Mapping[str, tuple[float, str]],
    weights: Mapping[str, int],
) -> dict[str, list[Interval]]:
    """Per key, the times one of its runs certainly waited."""
    spans: dict[str, list[Interval]] = {key: [] for key in weights}
    for run_id, run in members.items():
        if run.queue_position is not None and run_id in waited:
            until = waited[run_id][0]
            if until >= run.answered:
                spans[run.fair_key].append((run.answered, until))
    return {key: merged(found) for key, found in spans.items()}


def _hidden(
    unnamed: Sequence[Unnamed],
    scope: str,
    members: Mapping[str, Accepted],
    grants: Sequence[Grant],
) -> list[tuple[str, float, float]]:
    """(key, from, to): when each run an unnamed start may have made was granted, if at all."""
    found: list[tuple[str, float, float]] = []
    for start in unnamed:
        if start.scope != scope:
            continue
        later = [
            grant.latest
            for grant in grants
            if members[grant.run_id].fair_key == start.fair_key
            and members[grant.run_id].rank == start.rank
            and members[grant.run_id].sent > start.ended
        ]
        found.append((start.fair_key, start.sent, min(later, default=float("inf"))))
    return found


def _stretches(
    usable: Sequence[Grant],
    members: Mapping[str, Accepted],
    breakers: Sequence[Grant],
    waiting: Mapping[str, list[Interval]],
    changes: Sequence[Change[FairOrder | None]],
    weights: Mapping[str, int],
) -> list[list[Grant]]:
    order = FairOrder(True, tuple(sorted(weights.items())))
    stretches: list[list[Grant]] = []
    current: list[Grant] = []
    for grant in usable:
        if current and _linked(current[-1], grant, members, breakers, waiting, changes, order):
            current.append(grant)
            continue
        if current:
            stretches.append(current)
        current = [grant]
    if current:
        stretches.append(current)
    return stretches


def _linked(
    before: Grant,
    after: Grant,
    members: Mapping[str, Accepted],
    breakers: Sequence[Grant],
    waiting: Mapping[str, list[Interval]],
    changes: Sequence[Change[FairOrder | None]],
    order: FairOrder,
) -> bool:
    start, end = before.latest, after.latest
    return (
        members[before.run_id].rank == members[after.run_id].rank
        and possible_values(FAIR_OFF, changes, start, end) == [order]
        and not any(b.earliest <= end and start <= b.latest for b in breakers)
        and all(_covered(spans, start, end) for spans in waiting.values())
    )


def _judge(
    counts: Counter[str],
    size: int,
    weights: Mapping[str, int],
    hidden: Sequence[tuple[str, float, float]],
    first: Grant,
    last: Grant,
) -> str | None:
    """Why the window's shares are off, with the unnamed runs counted any way; None if not."""
    total = sum(weights.values())
    tolerance = TOLERANCE * max(weights.values()) / total
    extra: Counter[str] = Counter(
        key for key, since, until in hidden if since <= last.latest and first.latest <= until
    )
    for key, weight in weights.items():
        expected = weight / total
        others = sum(extra.values()) - extra[key]
        lowest = counts[key] / (size + others)
        highest = (counts[key] + extra[key]) / (size + extra[key])
        if highest < expected - tolerance or lowest > expected + tolerance:
            shown = ", ".join(f"{name} {counts[name]}" for name in weights)
            maybe = f" (+ up to {dict(extra)} unnamed)" if extra else ""
            return (
                f"{key} got {counts[key] / size:.2f} of {size} grants ({shown}{maybe}), "
                f"not {expected:.2f} +- {tolerance:.3f}"
            )
    return None
