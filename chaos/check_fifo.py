"""Property (d): first come, first served, per scope.

For accepted runs A and B of one scope, A's 202 received before B's request was sent, and both
granted a slot: A was granted first. When runs were granted comes in as an input (a
:data:`GrantOrder`, scope -> runs in the order they got a slot, with when), so its source can
change; :func:`grants_from_agent_starts` reads it from each run's first ``agent_start``, which
may lag the grant itself (the agent waits out the lease of the slot's previous attempt, or its
first worker died before starting it), so an inversion counts only when B's grant precedes A's
by more than ``tolerance_seconds``; smaller ones are listed as notes.

Also: a ``reject`` start that got a 202 was granted a slot by its 202. While an earlier-accepted
run of its scope still waited in the queue (a 202 with a queue position, and neither granted nor
cancelled yet), no such start may be granted.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from chaos.facts import Accepted, stamp
from chaos.logs import START_EVENT, LogLine
from chaos.verdicts import PropertyResult

NAME = "fifo"
TITLE = "FIFO per scope"


@dataclass(frozen=True)
class Grant:
    run_id: str
    at: float


GrantOrder = Mapping[str, Sequence[Grant]]


def grants_from_agent_starts(
    accepted: Mapping[str, Accepted], lines: Sequence[LogLine]
) -> dict[str, list[Grant]]:
    """Each accepted run's grant: its first ``agent_start``, grouped by the run's scope."""
    first: dict[str, float] = {}
    for line in lines:
        if line.event == START_EVENT and line.run_id in accepted:
            first[line.run_id] = min(first.get(line.run_id, line.at), line.at)
    order: dict[str, list[Grant]] = defaultdict(list)
    for run_id, at in sorted(first.items(), key=lambda item: item[1]):
        order[accepted[run_id].scope].append(Grant(run_id, at))
    return dict(order)


def check_fifo(
    accepted: Mapping[str, Accepted],
    grants: GrantOrder,
    cancels_sent: Mapping[str, float],
    tolerance_seconds: float,
) -> PropertyResult:
    granted = {grant.run_id: grant.at for scope in grants.values() for grant in scope}
    by_scope: dict[str, list[Accepted]] = defaultdict(list)
    for run in accepted.values():
        by_scope[run.scope].append(run)
    violations: list[str] = []
    near: list[str] = []
    pairs = 0
    for runs in by_scope.values():
        for a in runs:
            for b in runs:
                if a is b or a.answered >= b.sent:
                    continue
                if a.run_id in granted and b.run_id in granted:
                    pairs += 1
                    ahead = granted[a.run_id] - granted[b.run_id]
                    if ahead > 0:
                        text = (
                            f"{b.run_id} ({b.on_busy}, sent {stamp(b.sent)}) got its slot "
                            f"{ahead:.2f} s before {a.run_id} ({a.on_busy}, 202 at "
                            f"{stamp(a.answered)}), granted {stamp(granted[b.run_id])} vs "
                            f"{stamp(granted[a.run_id])}"
                        )
                        (violations if ahead > tolerance_seconds else near).append(text)
                jumped = _reject_jumped(a, b, granted, cancels_sent, tolerance_seconds)
                if jumped is not None:
                    violations.append(jumped)
    notes = [f"pairs compared: {pairs}; tolerance {tolerance_seconds:g} s"]
    notes += [f"within tolerance: {text}" for text in near[:3]]
    if len(near) > 3:
        notes.append(f"... {len(near)} inversions within tolerance in all")
    return PropertyResult(name=NAME, title=TITLE, checked=pairs, violations=violations, notes=notes)


def _reject_jumped(
    waiting: Accepted,
    reject: Accepted,
    granted: Mapping[str, float],
    cancels_sent: Mapping[str, float],
    tolerance_seconds: float,
) -> str | None:
    """``reject`` got its slot (by its 202) while ``waiting``, accepted earlier into the queue,
    had certainly not left it: it was granted more than the tolerance later, or it was still
    there when a cancel that removed it was sent. Pairs both granted are left to the rule above
    unless the reject's 202 is what proves it."""
    if reject.on_busy != "reject" or waiting.queue_position is None:
        return None
    if waiting.run_id in granted:
        left_at_earliest = granted[waiting.run_id] - tolerance_seconds
        if reject.run_id in granted and granted[reject.run_id] < left_at_earliest:
            return None  # already counted as an inversion
    elif waiting.run_id in cancels_sent:
        left_at_earliest = cancels_sent[waiting.run_id]
    else:
        return None  # when it left the queue is unknown
    if reject.answered >= left_at_earliest:
        return None
    return (
        f"reject start {reject.run_id} got a slot by {stamp(reject.answered)} while "
        f"{waiting.run_id} (202 at {stamp(waiting.answered)}, queue_position "
        f"{waiting.queue_position}) still waited (left the queue at the earliest "
        f"{stamp(left_at_earliest)})"
    )
