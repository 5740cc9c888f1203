"""Property (n): no run is granted a slot while its scope is certainly paused.

A pause (``POST /agents/scopes/{scope}/pause``) takes effect at an instant between its send and
its answer, a resume likewise (:mod:`chaos.limits`); one with no answer or a 5xx may take effect
at any instant after its send, or never. So the scope was certainly paused throughout [a, b]
when a pause is the only change that could have been in effect there: from a pause's answer to
the send of the next resume, unless a resume sent earlier got no answer. A grant (an interval it
certainly lies in, :mod:`chaos.grants`) wholly inside such a time is a violation. A run that
started at once (its 202 said so) is a grant like any other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from chaos.facts import stamp
from chaos.grants import Grant, GrantOrder
from chaos.limits import Change, possible_values
from chaos.verdicts import PropertyResult

NAME = "paused"
TITLE = "no slot granted while the scope was certainly paused"


def certainly_paused(changes: Sequence[Change[bool]]) -> list[tuple[float, float]]:
    """The times the scope was certainly paused: from a pause's answer until the next change
    that could undo it was sent (open-ended: inf)."""
    spans: list[tuple[float, float]] = []
    for change in changes:
        if not change.value or math.isinf(change.answered):
            continue
        later = [other.sent for other in changes if other.sent > change.sent and not other.value]
        end = min(later, default=math.inf)
        certain = possible_values(False, changes, change.answered, change.answered) == [True]
        if certain and end > change.answered:
            spans.append((change.answered, end))
    return spans


def check_paused(
    grants: GrantOrder, changes_by_scope: Mapping[str, Sequence[Change[bool]]]
) -> PropertyResult:
    """``changes_by_scope``: each paused scope's pauses and resumes, in the order sent."""
    violations: list[str] = []
    notes: list[str] = []
    checked = 0
    for scope, changes in sorted(changes_by_scope.items()):
        spans = certainly_paused(changes)
        pauses = sum(1 for change in changes if change.value)
        unanswered = sum(1 for change in changes if math.isinf(change.answered))
        paused_seconds = sum(min(end, 1e18) - start for start, end in spans)
        notes.append(
            f"{scope}: {pauses} pauses ({unanswered} changes unanswered), certainly paused "
            f"{len(spans)} times, {paused_seconds:.1f} s in all"
        )
        uncertain = 0
        for grant in grants.get(scope, []):
            checked += 1
            possible = possible_values(False, changes, grant.earliest, grant.latest)
            if possible == [True]:
                violations.append(_violation(scope, grant, spans))
            elif True in possible:
                uncertain += 1
        notes.append(
            f"{scope}: grants while a pause may have been in effect (no claim): {uncertain}"
        )
    return PropertyResult(
        name=NAME, title=TITLE, checked=checked, violations=violations, notes=notes
    )


def _violation(scope: str, grant: Grant, spans: Sequence[tuple[float, float]]) -> str:
    span = next(
        ((start, end) for start, end in spans if start <= grant.earliest and grant.latest <= end),
        None,
    )
    during = (
        f"paused (answered) {stamp(span[0])}, resume sent "
        f"{stamp(span[1]) if not math.isinf(span[1]) else 'never'}"
        if span
        else "certainly paused"
    )
    when = (
        stamp(grant.latest)
        if grant.earliest == grant.latest
        else f"between {stamp(grant.earliest)} and {stamp(grant.latest)}"
    )
    return f"{grant.run_id} granted {when} ({grant.source}) in {scope}: {during}"
