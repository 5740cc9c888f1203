"""The checker: a pure function of a run's history and its processes' log lines to one result
per property. It starts nothing, reads no file and looks at no clock.

(a) bound: never more than N agents at once per scope (from the agents' spans), N as it could
have been under the run's changes of it (:mod:`chaos.limits`); (b) final: every 202 ends DONE or
ERROR, whatever its priority; (c) once: a DONE run completed exactly once, an ERROR run at most
once, with the result its completion logged; (d) order: the service order per scope (a replace
first, then by priority, then first come; a reject never passes a waiting run); (k) expired: a
run expired in its queue was never granted nor started, and had asked for a queue timeout;
(l) attach: an attach never makes a second run of a request that was certainly open, and
attaches to a run of its own request; (m) replace: a replacement's agent starts after the
replaced run's agent stopped; (e) keys: one run per Idempotency-Key; (f) 5xx: no 5xx but 503,
and a 503 only around an outage or a fault; (g) liveness: after healing, a new run in every
scope used ends DONE; (h) granted: every agent that started belongs to a run an answer named;
(i) faults: every fault was injected as planned; (j) replays: every history replays on the
workers' code (replayed after the run, :mod:`chaos.replays`); (n) paused: no run granted a slot
while its scope was certainly paused; (o) fair: two backlogged fairness keys weighted 3:1 get
0.75 +- 0.075 of every 100 grants to them while fair shares were certainly on.

The only tolerances: ``grace_seconds`` and ``worker_grace_seconds`` (a 503 just after an outage
or a worker fault, while clients reconnect and workflow tasks find a live worker), and with the
fallback ``fifo_grants="agent_start"``, ``fifo_tolerance_seconds`` (a grant read from an
agent's start may lag the grant itself).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from chaos.check_api import check_errors, check_liveness
from chaos.check_attach import check_attach
from chaos.check_bound import check_bound
from chaos.check_expired import check_expired
from chaos.check_fair import check_fair, unnamed_starts
from chaos.check_faults import check_faults
from chaos.check_fifo import check_order, waited_until
from chaos.check_granted import check_granted
from chaos.check_keys import check_keys
from chaos.check_paused import check_paused
from chaos.check_replace import check_replace
from chaos.check_runs import check_final, check_once
from chaos.facts import (
    Accepted,
    accepted_runs,
    cancel_targets,
    fresh_reads,
    replacements,
    status_reads,
    successful_cancels,
    terminations,
)
from chaos.grants import (
    FifoGrants,
    Grant,
    first_grants,
    grants_from_agent_starts,
    grants_from_started_at,
)
from chaos.history import History, Op
from chaos.intervals import merged
from chaos.limits import (
    FAIR_OFF,
    aging_floor,
    limit_changes,
    order_changes,
    pause_changes,
    paused_scopes,
    possible_values,
)
from chaos.logs import LogLine
from chaos.replays import check_replays
from chaos.spans import agent_spans
from chaos.verdicts import PropertyResult, Verdict


@dataclass(frozen=True)
class CheckerOptions:
    # Where FIFO reads each run's grant from (see chaos.grants): the coordinator's grant time
    # in the run's status, or (the old approximation) the run's first agent start.
    fifo_grants: FifoGrants = "started_at"
    # With fifo_grants="agent_start": a run's first agent start may come this long after its
    # slot was granted, so inversions up to it are notes, not violations. None: the run's
    # heartbeat timeout (the lease of the slot's previous attempt, which a granted run may wait
    # out) plus 1 s.
    fifo_tolerance_seconds: float | None = None
    # A 503 this soon after a server outage or a fault of its API ended is still the outage's.
    grace_seconds: float = 5.0
    # ... and this soon after every worker was back: a workflow task handed to a dead or frozen
    # worker is handed to another only after the server's workflow task timeout (10 s).
    worker_grace_seconds: float = 15.0
    # Excuse a 503 while only one worker was unavailable too (not a promise of the README: the
    # other worker should answer; an option to look past it at the other properties).
    excuse_one_worker_503: bool = False


def check(
    history: History, lines: Sequence[LogLine], options: CheckerOptions | None = None
) -> Verdict:
    options = options or CheckerOptions()
    config = history.config
    accepted = accepted_runs(history)
    reads = status_reads(history)
    spans = agent_spans(lines, history.processes, history.finished)
    recorded = grants_from_started_at(accepted, reads)
    replaced = replacements(accepted, reads)
    trusted = fresh_reads(history, options.grace_seconds)
    return Verdict(
        properties=[
            check_bound(
                spans,
                config.slots,
                config.scope,
                config.workflow_id,
                limit_changes(history),
                _granted_after(accepted, recorded),
            ),
            check_final(
                accepted,
                reads,
                cancel_targets(history),
                fresh_reads(history, options.grace_seconds),
                _unanswered(history),
                terminations(history),
            ),
            check_once(accepted, reads, lines, history.processes),
            _order(history, lines, accepted, reads, options),
            check_expired(accepted, reads, recorded, spans),
            check_attach(history, accepted, reads, trusted, replaced, terminations(history)),
            check_replace(accepted, reads, spans, replaced),
            check_keys(history, lines),
            check_errors(
                history,
                options.grace_seconds,
                options.worker_grace_seconds,
                options.excuse_one_worker_503,
            ),
            check_liveness(accepted, reads, history),
            check_granted(history, lines),
            check_faults(history),
            check_replays(history),
            check_paused(
                recorded,
                {scope: pause_changes(history, scope) for scope in paused_scopes(history)},
            ),
            check_fair(
                accepted,
                recorded,
                waited_until(accepted, recorded, reads, successful_cancels(history), trusted),
                order_changes(history),
                aging_floor(history),
                unnamed_starts(history, accepted),
            ),
        ]
    )


def fair_at_grant(history: History, grants: Mapping[str, Sequence[Grant]]) -> set[str]:
    """The runs at some instant of whose grant fair shares could have been on."""
    changes = order_changes(history)
    if not changes:
        return set()
    return {
        grant.run_id
        for scope in grants.values()
        for grant in scope
        if any(
            order is None or order.fair_shares
            for order in possible_values(FAIR_OFF, changes, grant.earliest, grant.latest)
        )
    }


def _granted_after(
    accepted: Mapping[str, Accepted], grants: Mapping[str, list[Grant]]
) -> dict[str, float]:
    """Per run, an instant its grant certainly came after: its grant's lower bound, else the
    send of the earliest request that could have made it."""
    after = {run_id: run.sent for run_id, run in accepted.items()}
    for scope in grants.values():
        for grant in scope:
            after[grant.run_id] = min(after.get(grant.run_id, grant.earliest), grant.earliest)
    return after


def _order(
    history: History,
    lines: Sequence[LogLine],
    accepted: Mapping[str, Accepted],
    reads: Mapping[str, list[Op]],
    options: CheckerOptions,
) -> PropertyResult:
    grace = options.grace_seconds
    if options.fifo_grants == "started_at":
        grants = grants_from_started_at(accepted, reads)
        note = "grants: each run's started_at (the coordinator's grant time)"
    else:
        tolerance = options.fifo_tolerance_seconds
        if tolerance is None:
            tolerance = history.config.heartbeat_timeout_seconds + 1.0
        outages = [(w.started, w.ended + grace) for w in history.outages]
        worker_faults = [
            (f.started, f.ended + grace)
            for f in history.faults
            if any(name.startswith("worker") for name in f.affects)
        ]
        unclean = merged(outages + worker_faults)
        grants = grants_from_agent_starts(accepted, lines, tolerance, unclean)
        note = (
            f"grants: first agent_start, tolerance {tolerance:g} s of time without outage or "
            "worker fault"
        )
    grants = first_grants(grants, lines)
    trusted = fresh_reads(history, grace)
    waited = waited_until(accepted, grants, reads, successful_cancels(history), trusted)
    result = check_order(
        accepted, grants, waited, fair_at_grant(history, grants), aging_floor(history)
    )
    return result.model_copy(update={"notes": [note, *result.notes]})


def _unanswered(history: History) -> dict[str, list[Op]]:
    """Per run, its status reads that got no 200."""
    answers: dict[str, list[Op]] = defaultdict(list)
    for op in history.ops:
        if op.kind == "status" and op.status != 200:
            answers[str(op.request.get("run_id"))].append(op)
    return answers
