"""Property (a): never more than N agents at once in one scope, from the agents' spans.

Spans that only touch (one ends at the instant the next starts) do not overlap. One violation
per episode: each time a scope goes from N working agents to N + 1, with the spans open then.
A span counts in the scope of the agent it ran (its log line's user or agent type); a run whose
id names another scope (its coordinator took a run of another scope's user) is listed in a note.
An agent that started after its lease had already run out (its ``agent_lease_lost`` line says
the lease expired before its ``agent_start``) worked without a lease, however briefly: a
violation too, whatever else worked then.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from agent_runner.ids import ScopeKind, parse_run_id
from chaos.facts import scope_of, stamp
from chaos.spans import Span
from chaos.verdicts import PropertyResult

NAME = "bound"
TITLE = "at most N agents at once per scope"


def _granted_elsewhere(spans: Sequence[Span], kind: ScopeKind, base: str) -> list[str]:
    """Runs whose id names another scope than the one their agent worked in."""
    found: dict[str, str] = {}
    for span in spans:
        ref = parse_run_id(base, span.run_id)
        worked_in = scope_of(kind, span.agent_type, span.user_id)
        if ref is not None and scope_of(kind, ref.scope.key, ref.scope.key) != worked_in:
            found[span.run_id] = worked_in
    return [f"{run_id} worked in {scope}" for run_id, scope in sorted(found.items())]


def check_bound(
    spans: Sequence[Span], slots: int, kind: ScopeKind, base: str = "chaos"
) -> PropertyResult:
    by_scope: dict[str, list[Span]] = defaultdict(list)
    # A span that ends where it starts (a lease that ran out before the agent began) holds
    # no instant: it overlaps nothing.
    empty = [span for span in spans if span.end <= span.start]
    for span in spans:
        if span.end <= span.start:
            continue
        by_scope[scope_of(kind, span.agent_type, span.user_id)].append(span)
    violations = [
        f"{span.run_id} attempt {span.attempt} on {span.process}: agent_start at "
        f"{stamp(span.start)}, after its lease had expired at {stamp(span.end)}"
        for span in empty
        if span.end < span.start
    ]
    peak = 0
    with_unended = 0
    for scope, scope_spans in sorted(by_scope.items()):
        # At one instant, ends before starts: touching spans are not at once.
        changes = sorted(
            [(span.start, 1, span) for span in scope_spans]
            + [(span.end, 0, span) for span in scope_spans],
            key=lambda change: (change[0], change[1]),
        )
        working: list[Span] = []
        for at, is_start, span in changes:
            if not is_start:
                working.remove(span)
                continue
            working.append(span)
            peak = max(peak, len(working))
            if len(working) == slots + 1:
                with_unended += any(other.ended_by.startswith("no end line") for other in working)
                listed = "; ".join(other.describe() for other in working)
                violations.append(
                    f"{scope}: {len(working)} agents at {stamp(at)} (N={slots}): {listed}"
                )
    notes = [f"most agents at once in one scope: {peak}", f"scopes with agents: {len(by_scope)}"]
    unended = [span for span in spans if span.ended_by.startswith("no end line")]
    notes.append(
        f"violations with a span that has no end line: {with_unended} of {len(violations)}; "
        f"spans without an end line: {len(unended)} "
        f"({sum(1 for span in unended if 'sigkill' in span.ended_by)} of a SIGKILLed worker)"
    )
    notes += [
        f"span without duration: {span.describe()}" for span in empty[:3] if span.end == span.start
    ]
    elsewhere = _granted_elsewhere(spans, kind, base)
    notes.append(
        f"runs granted by another scope's coordinator: {len(elsewhere)}"
        + (f" ({'; '.join(elsewhere[:3])})" if elsewhere else "")
    )
    return PropertyResult(
        name=NAME, title=TITLE, checked=len(spans), violations=violations, notes=notes
    )
