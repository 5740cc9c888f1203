"""Facts the properties share, each a pure function of the history: which runs were accepted
(and when, at the earliest, each could have been created), which scope a run belongs to, what
its status reads said.

The rule: a bound that a property relies on is taken on the side that can only make the
property *harder* to pass. A run's ``answered`` is its first 202's arrival (it existed by
then); its ``sent`` is the start of the earliest request that could have created it (for a
keyed run, any request with its key and body, answered or not), so "A was accepted before B was
asked for" is never claimed when it is not certain.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent_runner.ids import ScopeKind
from chaos.history import History, Op
from chaos.intervals import overlaps

FINAL_STATES = ("DONE", "ERROR")


def scope_of(kind: ScopeKind, agent_type: str | None, user_id: str | None) -> str:
    """The scope a run belongs to, as a readable key: "global", "user:<id>", "type:<name>"."""
    if kind == ScopeKind.USER_ID:
        return f"user:{user_id}"
    if kind == ScopeKind.AGENT_TYPE:
        return f"type:{agent_type}"
    return "global"


def stamp(at: float) -> str:
    """A time for people: UTC, to the millisecond."""
    return time.strftime("%H:%M:%S", time.gmtime(at)) + f".{int(at * 1000) % 1000:03d}"


def start_body(op: Op) -> dict[str, Any]:
    body: dict[str, Any] = op.request.get("body") or {}
    return body


def start_key(op: Op) -> str | None:
    key = op.request.get("key")
    return key if isinstance(key, str) else None


def accepted_id(op: Op) -> str | None:
    """The run id a start's 202 carries."""
    if op.kind == "start" and op.status == 202 and isinstance(op.body, dict):
        run_id = op.body.get("run_id")
        return run_id if isinstance(run_id, str) else None
    return None


@dataclass(frozen=True)
class Accepted:
    run_id: str
    scope: str
    on_busy: str
    queue_position: int | None
    sent: float
    answered: float
    key: str | None
    phase: str


def accepted_runs(history: History) -> dict[str, Accepted]:
    """Every run a 202 named, from its earliest 202."""
    kind = history.config.scope
    starts = [op for op in history.ops if op.kind == "start"]
    first_sent: dict[tuple[str, str], float] = {}
    for op in starts:
        key = start_key(op)
        if key is not None:
            fingerprint = (key, repr(sorted(start_body(op).items())))
            first_sent[fingerprint] = min(first_sent.get(fingerprint, op.started), op.started)
    runs: dict[str, Accepted] = {}
    for op in sorted(starts, key=lambda op: op.ended):
        run_id = accepted_id(op)
        if run_id is None or run_id in runs:
            continue
        body, key = start_body(op), start_key(op)
        sent = op.started
        if key is not None:
            sent = first_sent[(key, repr(sorted(body.items())))]
        # A start sent to a coordinator directly names the scope it was sent to.
        scope = op.request.get("scope")
        runs[run_id] = Accepted(
            run_id=run_id,
            scope=scope
            if isinstance(scope, str)
            else scope_of(kind, body.get("agent_type"), body.get("user_id")),
            on_busy=str(body.get("on_busy", "reject")),
            queue_position=op.body.get("queue_position") if isinstance(op.body, dict) else None,
            sent=sent,
            answered=op.ended,
            key=key,
            phase=op.phase,
        )
    return runs


def terminations(history: History) -> dict[str, list[float]]:
    """When each scope's coordinator was terminated (by the nemesis, with the CLI's success),
    by scope ("global", "user:<id>", "type:<name>")."""
    base = history.config.workflow_id
    found: dict[str, list[float]] = defaultdict(list)
    for fault in history.faults:
        inject = fault.details.get("inject") or {}
        if fault.kind == "terminate-coordinator" and inject.get("exit") == 0:
            scope = str(inject.get("scope_id", "")).removeprefix(base).lstrip(":") or "global"
            found[scope].append(fault.started)
    return dict(found)


def terminated_between(
    found: dict[str, list[float]], scope: str, after: float, before: float
) -> str:
    """ " (its scope's coordinator was terminated at ...)" when that happened in between."""
    times = [at for at in found.get(scope, []) if after <= at <= before]
    if not times:
        return ""
    return f" (its scope's coordinator was terminated at {', '.join(map(stamp, times))})"


def named_runs(history: History) -> set[str]:
    """Every run id an answer named: a start's 202 (a client's, or the coordinator's answer to
    the nemesis's own ``admit``), a status or a cancel answered 200 or 202."""
    named: set[str] = set()
    for op in history.ops:
        if op.status in (200, 202) and isinstance(op.body, dict):
            run_id = op.body.get("run_id")
            if isinstance(run_id, str):
                named.add(run_id)
    return named


def status_reads(history: History) -> dict[str, list[Op]]:
    """Each run's 200 status answers, in the order they arrived."""
    reads: dict[str, list[Op]] = defaultdict(list)
    for op in sorted(history.ops, key=lambda op: op.ended):
        if op.kind == "status" and op.status == 200 and isinstance(op.body, dict):
            reads[str(op.request.get("run_id"))].append(op)
    return reads


def state_of(op: Op) -> str | None:
    state = op.body.get("state") if isinstance(op.body, dict) else None
    return state if isinstance(state, str) else None


def successful_cancels(history: History) -> dict[str, float]:
    """When the earliest cancel that ended or stopped each run (200 or 202) was sent."""
    sent: dict[str, float] = {}
    for op in history.ops:
        if op.kind == "cancel" and op.status in (200, 202):
            run_id = str(op.request.get("run_id"))
            sent[run_id] = min(sent.get(run_id, op.started), op.started)
    return sent


def cancel_targets(history: History) -> set[str]:
    """Every run a cancel was sent for, whatever came back."""
    return {str(op.request.get("run_id")) for op in history.ops if op.kind == "cancel"}


def fresh_reads(history: History, grace_seconds: float) -> Callable[[Op], bool]:
    """Whether a status read is held to be current: it overlaps no server outage and no fault
    of the API that answered it (nor the grace after one). In those, the README lets an API
    answer a run's last known status."""
    outages = [(w.started, w.ended + grace_seconds) for w in history.outages]
    api_faults = [(f.started, f.ended + grace_seconds, f.affects) for f in history.faults]

    def fresh(op: Op) -> bool:
        stale = outages + [(s, e) for s, e, affects in api_faults if f"api{op.api}" in affects]
        return not overlaps(stale, op.started, op.ended)

    return fresh
