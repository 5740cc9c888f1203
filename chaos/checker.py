"""The checker: a pure function of a run's history and its processes' log lines to one result
per property. It starts nothing, reads no file and looks at no clock.

(a) bound: never more than N agents at once per scope (from the agents' spans);
(b) final: every 202 ends DONE or ERROR; (c) once: a DONE run completed exactly once, an ERROR
run at most once, with the result its completion logged; (d) fifo: first accepted, first
granted, per scope; (e) keys: one run per Idempotency-Key; (f) 5xx: no 5xx but 503, and a 503
only around an outage or a fault; (g) liveness: after healing, a new run in every scope used
ends DONE.

The only tolerances: ``fifo_tolerance_seconds`` (a grant read from an agent's start may lag the
grant itself) and ``grace_seconds`` (a 503 just after an outage, while clients reconnect).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from chaos.check_api import check_errors, check_liveness
from chaos.check_bound import check_bound
from chaos.check_fifo import GrantOrder, check_fifo, grants_from_agent_starts, waited_until
from chaos.check_keys import check_keys
from chaos.check_runs import check_final, check_once
from chaos.facts import (
    Accepted,
    accepted_runs,
    cancel_targets,
    fresh_reads,
    status_reads,
    successful_cancels,
)
from chaos.history import History, Op
from chaos.intervals import Interval, merged
from chaos.logs import LogLine
from chaos.spans import agent_spans
from chaos.verdicts import PropertyResult, Verdict

# (accepted runs, log lines, tolerance, unclean time) -> when each run got its slot.
GrantSource = Callable[
    [Mapping[str, Accepted], Sequence[LogLine], float, list[Interval]], GrantOrder
]


@dataclass(frozen=True)
class CheckerOptions:
    # A run's first agent start may come this long after its slot was granted: inversions up
    # to it are notes, not violations. None: the run's heartbeat timeout (the lease of the
    # slot's previous attempt, which a granted run may wait out, or the time the server takes
    # to retry an attempt whose worker died before starting the agent) plus 1 s.
    fifo_tolerance_seconds: float | None = None
    # A 503 this soon after an outage or a fault ended is still the outage's.
    grace_seconds: float = 5.0
    grant_source: GrantSource = grants_from_agent_starts


def check(
    history: History, lines: Sequence[LogLine], options: CheckerOptions | None = None
) -> Verdict:
    options = options or CheckerOptions()
    config = history.config
    accepted = accepted_runs(history)
    reads = status_reads(history)
    spans = agent_spans(lines, history.processes, history.finished)
    return Verdict(
        properties=[
            check_bound(spans, config.slots, config.scope),
            check_final(
                accepted,
                reads,
                cancel_targets(history),
                fresh_reads(history, options.grace_seconds),
                _unanswered(history),
            ),
            check_once(accepted, reads, lines),
            _fifo(history, lines, accepted, reads, options),
            check_keys(history, lines),
            check_errors(history, options.grace_seconds),
            check_liveness(accepted, reads, history),
        ]
    )


def _fifo(
    history: History,
    lines: Sequence[LogLine],
    accepted: Mapping[str, Accepted],
    reads: Mapping[str, list[Op]],
    options: CheckerOptions,
) -> PropertyResult:
    tolerance = options.fifo_tolerance_seconds
    if tolerance is None:
        tolerance = history.config.heartbeat_timeout_seconds + 1.0
    grace = options.grace_seconds
    outages = [(w.started, w.ended + grace) for w in history.outages]
    worker_faults = [
        (f.started, f.ended + grace)
        for f in history.faults
        if any(name.startswith("worker") for name in f.affects)
    ]
    trusted = fresh_reads(history, grace)
    grants = options.grant_source(accepted, lines, tolerance, merged(outages + worker_faults))
    waited = waited_until(accepted, grants, reads, successful_cancels(history), trusted)
    result = check_fifo(accepted, grants, waited)
    note = f"tolerance: {tolerance:g} s of time without outage or worker fault"
    return result.model_copy(update={"notes": [note, *result.notes]})


def _unanswered(history: History) -> dict[str, Counter[str]]:
    """Per run, what its status reads got instead of a 200."""
    answers: dict[str, Counter[str]] = defaultdict(Counter)
    for op in history.ops:
        if op.kind == "status" and op.status != 200:
            answers[str(op.request.get("run_id"))][str(op.status or op.error)] += 1
    return answers
