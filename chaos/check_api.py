"""Properties of the API's answers: (f) no 5xx but 503, and a 503 only when something it needs
was unavailable; (g) after healing, a new run in every scope used got a slot and finished.

A 503, on any route, is excused when its request overlaps, or started within a grace after,
one of: a server outage (down or paused: every request needs the server), ``grace_seconds``;
a crowd of starts at the same API when the API shed the start itself ("Too many starts at
once", see SHED_CROWD);
a fault of the API it was sent to (a paused API's calls overrun their budget), the same grace;
a time when every worker was unavailable (dead, paused or cut off, or within
``worker_grace_seconds`` after it came back: starts, cancels and reads of open runs are answered
by a coordinator, which is workflow code on a worker), the same grace. A 503 while only one
worker was unavailable is not excused (the other must take over within the API's budget) unless
``one_worker`` says so, but for the first seconds of the fault, while a task it held waits for
its timeout (see STRANDED_SECONDS). Client timeouts and refused connections are counted,
not judged: a dead or paused API causes them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from chaos.facts import Accepted, accepted_id, stamp, state_of
from chaos.history import History, Op
from chaos.intervals import Interval, merged
from chaos.verdicts import PropertyResult

ERRORS_NAME = "5xx"
ERRORS_TITLE = "no 5xx but 503, 503 only in an outage"
LIVE_NAME = "liveness"
LIVE_TITLE = "after healing, a new run per scope ends DONE"


def workers_down(history: History, recovery: float) -> list[Interval]:
    """When every one of the stack's workers was unavailable: a fault affected it, or it came
    back less than ``recovery`` seconds before."""
    down: list[Interval] | None = None
    for index in range(history.config.workers):
        name = f"worker{index}"
        mine = merged((f.started, f.ended + recovery) for f in history.faults if name in f.affects)
        if down is None:
            down = mine
            continue
        down = [(max(a, c), min(b, d)) for a, b in down for c, d in mine if max(a, c) < min(b, d)]
    return down or []


def _windows(
    history: History, op: Op, grace: float, worker_grace: float
) -> Iterable[tuple[float, float, str]]:
    for outage in history.outages:
        yield outage.started, outage.ended + grace, "server"
    for fault in history.faults:
        if f"api{op.api}" in fault.affects:
            yield fault.started, fault.ended + grace, fault.kind
    for started, ended in workers_down(history, worker_grace):
        yield started, ended, "all-workers-down"


# A worker fault of any kind may strand the tasks that worker holds: one it was working on when
# it was killed or paused, or one the server hands to a poll it left open (paused, cut off:
# Temporal cannot tell such a worker from a slow one). Each waits for its timeout, a
# coordinator's workflow task 10 s, then the settings read it may schedule 5 s, and a scope's
# answers may stall past the API's budget meanwhile (found by the randomized run: an admit held
# 10 s by a workflow task its worker started 60 ms before it was killed). After that the other
# worker has every task, and a 503 is a violation again.
STRANDED_SECONDS = 10.0 + 5.0 + 2.0
# Faults whose heal takes a worker away (SIGTERM): the SDK drops a workflow task its poll
# received as its graceful shutdown began, and the task waits out its 10 s timeout (found by
# the randomized run, seed 44829: an admit stalled 10 s behind a task the leaving extra worker
# started 6 ms into its shutdown; temporalio/sdk-python#783, temporalio/sdk-go#1197).
LEAVES_AT_HEAL = frozenset({"other-slots-worker"})
# Faults that leave the worker's polls open until the heal (SIGSTOP, a cut network): when a
# task handed to it times out, the server may hand its retry to the same worker's other open
# poll, and the worker, back at the heal, can drop that retry too (found by the randomized run,
# seed 52973: a coordinator's task timed out on a paused worker, its retry went to the same
# worker, which, resumed 1 s later, evicted the run on the stale task's failed completion and
# logged "There were leftover buffered tasks when evicting run"; the retry waited out its own
# 10 s, and admits answered 503 17 s after the pause began, 6 s after the heal). Such a fault
# strands tasks from its start until one timeout past its heal. ``heartbeat-cut`` cuts its worker
# off the same way (its proxy) until the heal (the short chaos run of tests/test_chaos.py,
# seed 17: two admits stalled behind a settings read handed to the cut worker's open poll).
HOLDS_POLLS = frozenset({"pause-worker", "partition-worker", "heartbeat-cut"})


# The API's own refusal of a start it had no place in flight for (agent_runner/runs/gate.py):
# load shed, nothing asked of Temporal. Excused only in a crowd: at least this many other starts
# to the same API overlapped it (the gate's initial limit is 8; an overrun halves it).
BUSY_DETAIL = "Too many starts at once, please retry later"
SHED_CROWD = 4


def _shed(history: History, op: Op) -> str | None:
    """A start refused by the API's start gate while a crowd of starts was at that API."""
    if op.kind != "start" or not isinstance(op.body, dict) or op.body.get("detail") != BUSY_DETAIL:
        return None
    crowd = sum(
        1
        for other in history.ops
        if other.kind == "start"
        and other.api == op.api
        and other.index != op.index
        and other.started <= op.ended
        and other.ended >= op.started
    )
    return "load-shed" if crowd >= SHED_CROWD else None


def _stranded(history: History, op: Op) -> str | None:
    """A single worker's fault whose stranded tasks ``op`` may have waited on: from when it
    began, from when its heal took the worker away, and, for a worker whose polls stayed open,
    until its heal."""
    for fault in history.faults:
        windows = []
        if any(name.startswith("worker") for name in fault.affects):
            until = fault.ended if fault.kind in HOLDS_POLLS else fault.started
            windows.append((fault.started, until))
        if fault.kind in LEAVES_AT_HEAL:
            windows.append((fault.ended, fault.ended))  # an extra worker: none of the stack's
        for began, ended in windows:
            if op.started <= ended + STRANDED_SECONDS and op.ended >= began:
                return "one-worker-stranded"
    return None


def _one_worker_down(history: History, op: Op, worker_grace: float) -> str | None:
    for fault in history.faults:
        near = op.started <= fault.ended + worker_grace and op.ended >= fault.started
        if near and any(name.startswith("worker") for name in fault.affects):
            return f"{fault.kind} {fault.target}"
    return None


def check_errors(
    history: History, grace_seconds: float, worker_grace_seconds: float, one_worker: bool = False
) -> PropertyResult:
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
        windows = _windows(history, op, grace_seconds, worker_grace_seconds)
        cause = next(
            (why for started, ended, why in windows if op.started <= ended and op.ended >= started),
            None,
        )
        if cause is not None:
            excused[cause] += 1
            continue
        shed = _shed(history, op)
        if shed is not None:
            excused[shed] += 1
            continue
        stranded = _stranded(history, op)
        if stranded is not None:
            excused[stranded] += 1
            continue
        single = _one_worker_down(history, op, worker_grace_seconds)
        if single is not None and one_worker:
            excused["one-worker-down"] += 1
            continue
        around = f"only {single} around it" if single else "no outage or fault around it"
        violations.append(f"{described} ({around})")
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
