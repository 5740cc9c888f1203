"""Facts the properties share, each a pure function of the history: which runs were accepted
(and when, at the earliest, each could have been created, with what they asked: priority, queue
timeout, the request an attach matches, the run a replace cancelled), which scope a run belongs
to, what its status reads said, which runs were replaced and by which.

The rule: a bound that a property relies on is taken on the side that can only make the
property *harder* to pass. A run's ``answered`` is its first 202's arrival (it existed by
then); its ``sent`` is the start of the earliest request that could have created it (for a
keyed run, any request with its key and body, answered or not), so "A was accepted before B was
asked for" is never claimed when it is not certain.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agent_runner.contract import PRIORITY_DEFAULT
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


def attached_id(op: Op) -> str | None:
    """The run id an ``on_busy=attach`` start's 200 carries: an open run it found, not a new
    one."""
    if op.kind == "start" and op.status == 200 and isinstance(op.body, dict):
        run_id = op.body.get("run_id")
        return run_id if isinstance(run_id, str) and op.body.get("attached") is True else None
    return None


Triple = tuple[str, str, str]


def triple_of(body: Mapping[str, Any]) -> Triple:
    """What ``on_busy=attach`` matches runs by: agent type, user and params (canonical JSON, as
    the coordinator compares them)."""
    params = json.dumps(body.get("params"), sort_keys=True, separators=(",", ":"), default=str)
    return str(body.get("agent_type")), str(body.get("user_id")).lower(), params


def priority_of(body: Mapping[str, Any]) -> int:
    """The priority a start was sent with (a JSON number: 4.0 is 4), else the default."""
    priority = body.get("priority", PRIORITY_DEFAULT)
    if isinstance(priority, float) and priority.is_integer():
        return int(priority)
    if isinstance(priority, int) and not isinstance(priority, bool):
        return priority
    return PRIORITY_DEFAULT


def fair_key_of(body: Mapping[str, Any]) -> str:
    """Whose share a start is served from with fair shares on: its ``fairness_key``, else its
    user (lowercased, as a user id is compared)."""
    key = body.get("fairness_key")
    return key if isinstance(key, str) else str(body.get("user_id")).lower()


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
    priority: int = PRIORITY_DEFAULT
    # queue_timeout_seconds as sent (None: not sent).
    queue_timeout: float | None = None
    triple: Triple = ("", "", "")
    # on_busy=replace: the run its 202 says it cancelled.
    replaced_run_id: str | None = None
    # Whose share it is served from with fair shares on: its fairness_key, else its user.
    fair_key: str = ""

    @property
    def rank(self) -> int:
        """Its place in the service order while it waits: 0 for a replace (first in line),
        else its priority (1 first). Aging only raises a run that waited longer than every run
        accepted after it, so it never serves a later run first."""
        return 0 if self.on_busy == "replace" else self.priority


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
        timeout = body.get("queue_timeout_seconds")
        replaced = op.body.get("replaced_run_id") if isinstance(op.body, dict) else None
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
            priority=priority_of(body),
            queue_timeout=float(timeout) if isinstance(timeout, int | float) else None,
            triple=triple_of(body),
            replaced_run_id=replaced if isinstance(replaced, str) else None,
            fair_key=fair_key_of(body),
        )
    return runs


def replacements(
    accepted: Mapping[str, Accepted], reads: Mapping[str, list[Op]]
) -> dict[str, set[str]]:
    """Each replaced run and the runs that replaced it: as a replace's 202 said
    (``replaced_run_id``), or as the replaced run's status said (``replaced_by``)."""
    found: dict[str, set[str]] = defaultdict(set)
    for run in accepted.values():
        if run.replaced_run_id is not None:
            found[run.replaced_run_id].add(run.run_id)
    for run_id, run_reads in reads.items():
        for op in run_reads:
            replacer = op.body.get("replaced_by") if isinstance(op.body, dict) else None
            if isinstance(replacer, str):
                found[run_id].add(replacer)
    return dict(found)


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
