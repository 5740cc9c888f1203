"""Property (a): never more than N agents at once in one scope, from the agents' spans.

Spans that only touch (one ends at the instant the next starts) do not overlap. One violation
per episode: each time a scope goes from at most N working agents to more, with the spans open
then. A span counts in the scope of the agent it ran (its log line's user or agent type); a run
whose id names another scope (its coordinator took a run of another scope's user) is listed in a
note. An agent that started after its lease had already run out (its ``agent_lease_lost`` line
says the lease expired before its ``agent_start``) worked without a lease, however briefly: a
violation too, whatever else worked then.

N may change during the run (``PUT /agents/limits``, :mod:`chaos.limits`): lowering it stops no
agent at work, and grants nothing until fewer than the new N work. So k agents working at one
instant are too many only when k exceeds every N that could have been in effect from the
earliest grant among their runs to that instant (each run was granted while the others granted
before it still held their slots, at an instant of that interval, under an N of it). A run's
grant is bounded from below by its grant's earliest (:mod:`chaos.grants`), else by its start's
send, else by nothing. Without changes, N is the run's own throughout.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

from agent_runner.ids import ScopeKind, parse_run_id
from chaos.facts import scope_of, stamp
from chaos.limits import LimitChange, most_allowed
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
    spans: Sequence[Span],
    slots: int,
    kind: ScopeKind,
    base: str = "chaos",
    changes: Sequence[LimitChange] = (),
    granted_after: Mapping[str, float] | None = None,
) -> PropertyResult:
    """``slots``: the run's own N; ``changes``: the changes of N the run made;
    ``granted_after``: per run, an instant its grant certainly came after."""
    since = granted_after or {}
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
        events = sorted(
            [(span.start, 1, span) for span in scope_spans]
            + [(span.end, 0, span) for span in scope_spans],
            key=lambda event: (event[0], event[1]),
        )
        working: list[Span] = []
        over = False
        for at, is_start, span in events:
            if is_start:
                working.append(span)
                peak = max(peak, len(working))
            else:
                working.remove(span)
            # An end may make it too many too: the run granted first has left, and with it the
            # larger N its grant was made under.
            earliest = min(
                (min(since.get(other.run_id, -math.inf), other.start) for other in working),
                default=at,
            )
            allowed = most_allowed(slots, changes, earliest, at)
            was_over, over = over, len(working) > allowed
            if was_over or not over:
                continue
            with_unended += any(other.ended_by.startswith("no end line") for other in working)
            listed = "; ".join(other.describe() for other in working)
            limit = f"N={slots}"
            if changes:
                began = "the start" if math.isinf(earliest) else stamp(earliest)
                limit = f"N at most {allowed} from {began}"
            violations.append(f"{scope}: {len(working)} agents at {stamp(at)} ({limit}): {listed}")
    notes = [f"most agents at once in one scope: {peak}", f"scopes with agents: {len(by_scope)}"]
    if changes:
        notes.append(
            f"changes of N: {len(changes)} (to {', '.join(str(c.slots) for c in changes)}), "
            f"{sum(1 for c in changes if math.isinf(c.answered))} of them unanswered"
        )
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
