"""Property (m): a replacement's agent never works beside the agent of the run it replaced.

``on_busy=replace`` cancels the scope's oldest working run V and queues the new run R first in
line; R gets a slot only once V's workflow closed, so every agent span of V (:mod:`chaos.spans`)
ends before R's first ``agent_start`` (spans that touch do not overlap). With N = 1 the bound
says as much; with N > 1 another slot may free first, and only this property tells. The pairs
come from a replace's 202 (``replaced_run_id``) and from V's status (``replaced_by``); both
name the same R, and V is replaced once: two replacements of one run are a violation too. How
each replaced run ended is counted in a note (a run that completed as it was cancelled ends
DONE).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

from chaos.facts import Accepted, stamp, state_of
from chaos.history import Op
from chaos.spans import Span
from chaos.verdicts import PropertyResult

NAME = "replace"
TITLE = "a replacement's agent starts after the replaced one stopped"


def check_replace(
    accepted: Mapping[str, Accepted],
    reads: Mapping[str, list[Op]],
    spans: Sequence[Span],
    replaced: Mapping[str, set[str]],
) -> PropertyResult:
    """``replaced``: each replaced run and the runs that replaced it
    (:func:`chaos.facts.replacements`)."""
    by_run: dict[str, list[Span]] = defaultdict(list)
    for span in spans:
        if span.end > span.start:
            by_run[span.run_id].append(span)
    violations: list[str] = []
    ends: Counter[str] = Counter()
    both_worked = 0
    for victim, replacers in sorted(replaced.items()):
        run_reads = reads.get(victim, [])
        ends[str(state_of(run_reads[-1]) if run_reads else "never read")] += 1
        if len(replacers) > 1:
            violations.append(
                f"{victim} was replaced by {len(replacers)} runs: {sorted(replacers)}"
            )
        for replacer in sorted(replacers):
            scopes = {accepted[run].scope for run in (victim, replacer) if run in accepted}
            if len(scopes) > 1:
                violations.append(
                    f"{replacer} ({accepted[replacer].scope}) replaced {victim} of "
                    f"{accepted[victim].scope}"
                )
            if not by_run[victim] or not by_run[replacer]:
                continue
            both_worked += 1
            first = min(by_run[replacer], key=lambda span: span.start)
            late = [span for span in by_run[victim] if span.end > first.start]
            if late:
                violations.append(
                    f"{replacer} replaced {victim}: its agent started at {stamp(first.start)} "
                    f"({first.describe()}) while {victim}'s worked: "
                    + "; ".join(span.describe() for span in late)
                )
    notes = [
        f"replacements with both agents seen: {both_worked}",
        f"replaced runs ended: {dict(ends) or 'none'}",
    ]
    return PropertyResult(
        name=NAME,
        title=TITLE,
        checked=sum(len(replacers) for replacers in replaced.values()),
        violations=violations,
        notes=notes,
    )
