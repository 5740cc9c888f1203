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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from chaos.check_api import check_errors, check_liveness
from chaos.check_bound import check_bound
from chaos.check_fifo import GrantOrder, check_fifo, grants_from_agent_starts
from chaos.check_keys import check_keys
from chaos.check_runs import check_final, check_once
from chaos.facts import Accepted, accepted_runs, status_reads, successful_cancels
from chaos.history import History
from chaos.logs import LogLine
from chaos.spans import agent_spans
from chaos.verdicts import Verdict

GrantSource = Callable[[Mapping[str, Accepted], Sequence[LogLine]], GrantOrder]


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
            check_final(accepted, reads),
            check_once(accepted, reads, lines),
            check_fifo(
                accepted,
                options.grant_source(accepted, lines),
                successful_cancels(history),
                _fifo_tolerance(options, history),
            ),
            check_keys(history, lines),
            check_errors(history, options.grace_seconds),
            check_liveness(accepted, reads, history),
        ]
    )


def _fifo_tolerance(options: CheckerOptions, history: History) -> float:
    if options.fifo_tolerance_seconds is not None:
        return options.fifo_tolerance_seconds
    return history.config.heartbeat_timeout_seconds + 1.0
