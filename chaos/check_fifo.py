"""Property (d): first come, first served, per scope.

For accepted runs A and B of one scope, A's 202 received before B's request was sent: B may not
get a slot while A still waits. That covers an enqueued run overtaken by a later one and a
``reject`` start granted while an earlier enqueued run of its scope waited.

When each run got its slot comes in as an input (:data:`GrantOrder`: scope -> runs in grant
order, each with the interval its grant certainly lies in), so its source can change.
:func:`grants_from_agent_starts` bounds a grant from above by the run's first ``agent_start``
(and by its 202 when that said it started at once), and from below by that start minus
``tolerance_seconds`` of *clean* time (no server outage, no worker fault, nor the grace after
one): an agent may start that long after its grant (it waits out the lease of the slot's
previous attempt; its first worker died before starting it), and a fault stretches the wait.

A run that waited (its 202 gave a queue position) still waited at least until: its grant's
lower bound; the start of the last status read that showed it queued (outside outages, when an
API may answer a stale status); the start of a cancel that ended it while it waited. A run whose
202 said it started at once never waited.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from chaos.facts import Accepted, stamp
from chaos.history import Op
from chaos.intervals import Interval, walk_back
from chaos.logs import START_EVENT, LogLine
from chaos.verdicts import PropertyResult

NAME = "fifo"
TITLE = "FIFO per scope"


@dataclass(frozen=True)
class Grant:
    run_id: str
    # The grant happened within [earliest, latest].
    earliest: float
    latest: float


GrantOrder = Mapping[str, Sequence[Grant]]


def grants_from_agent_starts(
    accepted: Mapping[str, Accepted],
    lines: Sequence[LogLine],
    tolerance_seconds: float,
    unclean: list[Interval],
) -> dict[str, list[Grant]]:
    first: dict[str, float] = {}
    for line in lines:
        if line.event == START_EVENT and line.run_id in accepted:
            first[line.run_id] = min(first.get(line.run_id, line.at), line.at)
    order: dict[str, list[Grant]] = defaultdict(list)
    for run_id, started in first.items():
        run = accepted[run_id]
        latest = min(started, run.answered) if run.queue_position is None else started
        earliest = max(run.sent, walk_back(started, tolerance_seconds, unclean))
        order[run.scope].append(Grant(run_id, min(earliest, latest), latest))
    return {scope: sorted(grants, key=lambda g: g.latest) for scope, grants in order.items()}


def waited_until(
    accepted: Mapping[str, Accepted],
    grants: GrantOrder,
    reads: Mapping[str, list[Op]],
    cancels_sent: Mapping[str, float],
    trusted: Callable[[Op], bool],
) -> dict[str, tuple[float, str]]:
    """For each run that waited: a time it certainly still waited at, and the evidence. Reads
    that ``trusted`` refuses (an API may answer a stale status in an outage) are no evidence."""
    granted = {grant.run_id: grant for scope in grants.values() for grant in scope}
    until: dict[str, tuple[float, str]] = {}
    for run_id, run in accepted.items():
        if run.queue_position is None:
            continue
        evidence: list[tuple[float, str]] = []
        if run_id in granted:
            evidence.append((granted[run_id].earliest, "its grant at the earliest"))
        for op in reads.get(run_id, []):
            body = op.body if isinstance(op.body, dict) else {}
            position = body.get("queue_position")
            queued = body.get("state") == "PENDING" and isinstance(position, int) and position > 0
            if queued and trusted(op):
                evidence.append((op.started, f"read at position {position}"))
        if run_id in cancels_sent and run_id not in granted:
            evidence.append((cancels_sent[run_id], "a cancel that ended it was sent"))
        if evidence:
            until[run_id] = max(evidence)
    return until


def check_fifo(
    accepted: Mapping[str, Accepted],
    grants: GrantOrder,
    waited: Mapping[str, tuple[float, str]],
) -> PropertyResult:
    granted = {grant.run_id: grant for scope in grants.values() for grant in scope}
    by_scope: dict[str, list[Accepted]] = defaultdict(list)
    for run in accepted.values():
        by_scope[run.scope].append(run)
    violations: list[str] = []
    near: list[str] = []
    pairs = 0
    for runs in by_scope.values():
        for a in runs:
            if a.run_id not in waited:
                continue
            for b in runs:
                if b is a or a.answered >= b.sent or b.run_id not in granted:
                    continue
                pairs += 1
                still, evidence = waited[a.run_id]
                b_granted = granted[b.run_id].latest
                text = (
                    f"{b.run_id} ({b.on_busy}, sent {stamp(b.sent)}) had a slot by "
                    f"{stamp(b_granted)} while {a.run_id} ({a.on_busy}, 202 at "
                    f"{stamp(a.answered)}, queue_position {a.queue_position}) still waited at "
                    f"{stamp(still)} ({evidence})"
                )
                if b_granted < still:
                    violations.append(text)
                elif a.run_id in granted and b_granted < granted[a.run_id].latest:
                    near.append(
                        f"{b.run_id} had a slot by {stamp(b_granted)}, {a.run_id} (202 at "
                        f"{stamp(a.answered)}) by {stamp(granted[a.run_id].latest)}"
                    )
    notes = [f"pairs compared: {pairs}"]
    notes += [f"not proven (within tolerance): {text}" for text in near[:3]]
    if len(near) > 3:
        notes.append(f"... {len(near)} such in all")
    return PropertyResult(name=NAME, title=TITLE, checked=pairs, violations=violations, notes=notes)
