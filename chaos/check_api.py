"""Properties of the API's answers: (f) no 5xx but 503, and a 503 only when something it needs
was unavailable; (g) after healing, a new run in every scope used got a slot and finished.

A 503 is excused when its request overlaps, or started within ``grace_seconds`` after, one of:
a server outage (down or paused: every request needs the server); a fault of the API it was
sent to (a paused API's calls overrun their budget); for an enqueue or a cancel, a fault of a
worker (the queue's updates are answered by workflow code on a worker, as the README says for
enqueue). Client timeouts and refused connections are counted, not judged: a dead or paused API
causes them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from chaos.facts import Accepted, accepted_id, stamp, start_body, state_of
from chaos.history import History, Op
from chaos.verdicts import PropertyResult

ERRORS_NAME = "5xx"
ERRORS_TITLE = "no 5xx but 503, 503 only in an outage"
LIVE_NAME = "liveness"
LIVE_TITLE = "after healing, a new run per scope ends DONE"


def _needs_a_worker(op: Op) -> bool:
    return op.kind == "cancel" or (
        op.kind == "start" and start_body(op).get("on_busy") == "enqueue"
    )


def _windows(history: History, op: Op) -> Iterable[tuple[float, float, str]]:
    for outage in history.outages:
        yield outage.started, outage.ended, f"server {outage.cause}"
    for fault in history.faults:
        if f"api{op.api}" in fault.affects or (
            _needs_a_worker(op) and any(name.startswith("worker") for name in fault.affects)
        ):
            yield fault.started, fault.ended, f"{fault.kind} {fault.target}"


def check_errors(history: History, grace_seconds: float) -> PropertyResult:
    violations: list[str] = []
    excused: Counter[str] = Counter()
    transport: Counter[str] = Counter()
    for op in history.ops:
        if op.error is not None:
            transport[op.error] += 1
        if op.status is None or op.status < 500:
            continue
        described = (
            f"{op.kind} {op.request} to api{op.api} sent {stamp(op.started)} answered "
            f"{stamp(op.ended)}: {op.status} {op.body!r}"
        )
        if op.status != 503:
            violations.append(described)
            continue
        cause = next(
            (
                why
                for started, ended, why in _windows(history, op)
                if op.started <= ended + grace_seconds and op.ended >= started
            ),
            None,
        )
        if cause is None:
            violations.append(f"{described} (no outage or fault around it)")
        else:
            excused[cause.split(" ")[0]] += 1
    answered = sum(1 for op in history.ops if op.status is not None)
    notes = [f"503 excused by: {dict(excused) or 'none'}"]
    notes.append(f"no answer (not judged): {dict(transport) or 'none'}")
    return PropertyResult(
        name=ERRORS_NAME, title=ERRORS_TITLE, checked=answered, violations=violations, notes=notes
    )


def check_liveness(
    accepted: Mapping[str, Accepted], reads: Mapping[str, list[Op]], history: History
) -> PropertyResult:
    used = sorted({run.scope for run in accepted.values() if run.phase == "chaos"})
    probes: dict[str, list[str]] = {}
    for op in history.ops:
        run_id = accepted_id(op)
        if op.phase == "probe" and run_id is not None:
            probes.setdefault(accepted[run_id].scope, []).append(run_id)
    violations: list[str] = []
    for scope in used:
        run_ids = probes.get(scope, [])
        if not run_ids:
            violations.append(f"{scope}: no probe run was accepted after healing")
            continue
        states = {
            run_id: state_of(reads[run_id][-1]) if reads.get(run_id) else None for run_id in run_ids
        }
        if "DONE" not in states.values():
            violations.append(f"{scope}: probe runs ended {states}")
    return PropertyResult(
        name=LIVE_NAME, title=LIVE_TITLE, checked=len(used), violations=violations
    )
