"""Property (d): the service order per scope: by rank, then first come, first served.

A run's rank (:attr:`chaos.facts.Accepted.rank`) is 0 for an ``on_busy=replace`` start (it waits
first in line), else its priority (1 first). For accepted runs A and B of one scope, A's 202
received before B's request was sent: B may not get a slot while A still waits when B is a
``reject`` start (granted only when nothing waits, whatever the priorities), or when ``rank(A) <=
rank(B)`` and A is no replace (a replace waits for the slot of the run it replaced, and another slot
that frees meanwhile goes to the next run: chaos seed 70913). A run that waited ``aging_seconds`` is
served as priority 1, but A waited longer than B, so aging never serves B first where this rule says
A. When both were granted, that is ``grant(A) <= grant(B)`` (ties allowed: one coordinator task may
grant several runs); when A never was (it was cancelled, or expired, while it waited), B may not
have been granted before A certainly stopped waiting. That covers an enqueued run overtaken by a
later one of no better rank and a ``reject`` start granted while an earlier enqueued run of its
scope waited. A later run of a better rank that certainly overtook an earlier one is counted in a
note.

Fair shares (:mod:`chaos.fair`) interleave the fairness keys of one rank, in order within each
key; a better rank still goes first. So where fair shares could have been on at some instant of
B's grant (:mod:`chaos.limits`: from a change's send on, until a later change to off was
answered), A binds B only when they share a fairness key and ``rank(A) <= rank(B)``, or when
``rank(A) < rank(B)`` and B had certainly not waited ``aging_seconds`` (the shortest that could
have been in effect) by its grant: aged, B counts as priority 1 beside A.

When each run got its slot comes in as an input (:mod:`chaos.grants`), each grant an interval it
certainly lies in. A run still waited at least until: its grant's lower bound; the start of the
last status read that showed it queued, for a run never granted (outside outages, when an API may
answer a stale status; a granted run's grant is its own evidence, see ``waited_until``);
the start of a cancel that ended it while it waited. A violation is only claimed when B's grant
is certainly before that.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Mapping

from agent_runner.contract import PRIORITY_DEFAULT
from chaos.facts import Accepted, stamp
from chaos.grants import GrantOrder
from chaos.history import Op
from chaos.verdicts import PropertyResult

NAME = "order"
TITLE = "service order per scope: rank, then first come"


def waited_until(
    accepted: Mapping[str, Accepted],
    grants: GrantOrder,
    reads: Mapping[str, list[Op]],
    cancels_sent: Mapping[str, float],
    trusted: Callable[[Op], bool],
) -> dict[str, tuple[float, str]]:
    """For each run: a time it certainly had not been granted before, and the evidence. Reads
    that ``trusted`` refuses (an API may answer a stale status in an outage) are no evidence."""
    granted = {grant.run_id: grant for scope in grants.values() for grant in scope}
    until: dict[str, tuple[float, str]] = {}
    for run_id, run in accepted.items():
        evidence: list[tuple[float, str]] = []
        if run_id in granted:
            grant = granted[run_id]
            exact = grant.earliest == grant.latest
            evidence.append((grant.earliest, "its grant" if exact else "its grant at the earliest"))
        # A read is no evidence against a run's own grant: a grant's time is its coordinator's
        # workflow task's start, and a query answers from the task before until that task
        # completes (seed 61819: a run granted at 25.439 still read queued at 25.841, beside a
        # later run granted in the same task).
        readable = run.queue_position is not None and run_id not in granted
        for op in reads.get(run_id, []) if readable else []:
            body = op.body if isinstance(op.body, dict) else {}
            position = body.get("queue_position")
            queued = body.get("state") == "PENDING" and isinstance(position, int) and position > 0
            if queued and trusted(op):
                evidence.append((op.started, f"read at position {position}"))
        if run_id in cancels_sent and run_id not in granted and run.queue_position is not None:
            evidence.append((cancels_sent[run_id], "a cancel that ended it was sent"))
        if evidence:
            until[run_id] = max(evidence)
    return until


def bound_by_order(a: Accepted, b: Accepted, *, fair: bool = False, aged: bool = False) -> bool:
    """Whether B, sent after A's 202, may not be granted while A waits. A replace waits for
    the slot of the run it replaced (never beside that run's agent: property ``replace``), so
    a slot another run leaves meanwhile may go to a later run; a ``reject`` start still never
    passes it (nothing is granted to one while any run waits). ``fair``: fair shares may have
    been on at B's grant; ``aged``: B may have waited ``aging_seconds`` by then."""
    if b.on_busy == "reject":
        return True
    if a.on_busy == "replace":
        return False
    if not fair:
        return a.rank <= b.rank
    if a.fair_key == b.fair_key:
        return a.rank <= b.rank
    return a.rank < b.rank and not aged


def check_order(
    accepted: Mapping[str, Accepted],
    grants: GrantOrder,
    waited: Mapping[str, tuple[float, str]],
    fair_at_grant: Collection[str] = (),
    aging_seconds: float = math.inf,
) -> PropertyResult:
    """``fair_at_grant``: the runs at whose grant fair shares could have been on;
    ``aging_seconds``: the shortest that could have been in effect."""
    granted = {grant.run_id: grant for scope in grants.values() for grant in scope}
    by_scope: dict[str, list[Accepted]] = defaultdict(list)
    for run in accepted.values():
        by_scope[run.scope].append(run)
    violations: list[str] = []
    near: list[str] = []
    pairs = 0
    overtaking = 0
    fair_pairs = 0
    for runs in by_scope.values():
        for a in runs:
            if a.run_id not in waited:
                continue
            for b in runs:
                if b is a or a.answered >= b.sent or b.run_id not in granted:
                    continue
                still, evidence = waited[a.run_id]
                b_granted = granted[b.run_id].latest
                fair = b.run_id in fair_at_grant
                aged = b_granted - b.sent >= aging_seconds
                if not bound_by_order(a, b, fair=fair, aged=aged):
                    if fair and bound_by_order(a, b):
                        fair_pairs += 1
                    else:
                        overtaking += b_granted < still
                    continue
                pairs += 1
                text = (
                    f"{b.run_id} ({_kind(b)}, sent {stamp(b.sent)}) had a slot by "
                    f"{stamp(b_granted)} while {a.run_id} ({_kind(a)}, 202 at "
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
    sources = Counter(grant.source for grant in granted.values())
    notes = [
        f"pairs compared: {pairs}",
        f"later runs of a better rank granted while an earlier one waited: {overtaking}",
        f"runs granted while fair shares could have been on: {len(fair_at_grant)} (pairs of "
        f"two fairness keys not compared: {fair_pairs})",
        f"grants by source: {dict(sources) or 'none'}",
    ]
    notes += [f"not proven (grant times overlap): {text}" for text in near[:3]]
    if len(near) > 3:
        notes.append(f"... {len(near)} such in all")
    return PropertyResult(name=NAME, title=TITLE, checked=pairs, violations=violations, notes=notes)


def _kind(run: Accepted) -> str:
    """How a run asked: its on_busy, and its priority unless the default's."""
    return run.on_busy if run.priority == PRIORITY_DEFAULT else f"{run.on_busy} p{run.priority}"
