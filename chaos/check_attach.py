"""Property (l): ``on_busy=attach`` never starts a second run of one request.

The triple of a start is its agent type, user and params (:func:`chaos.facts.triple_of`). An
attach answered 200 (``attached``) made no run: the run it names must be one of the same triple.
An attach answered 202 made a new run R; that is a violation when another accepted run A of the
same triple was certainly open, and not being cancelled, throughout the coordinator's decision
on R:

- A's 202 arrived before R's start was sent (for a keyed R, its key's first request);
- a status read of A that began after R's 202 arrived, and is held to be current (no outage or
  fault of its API around it), still said PENDING or RUNNING (a run that ended stays ended, so
  A was open from its 202 to that read);
- no cancel of A was sent before R's 202 arrived, and no replace that cancelled A (a replace's
  202 naming it, or A's status naming its replacement) was sent before then, or at an unknown
  time (a replacement no 202 of ours named).

A terminated coordinator's successor takes over its book, so a termination excuses nothing; one
between A's 202 and R's is named in the violation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from chaos.facts import (
    Accepted,
    attached_id,
    stamp,
    start_body,
    state_of,
    terminated_between,
    triple_of,
)
from chaos.history import History, Op
from chaos.verdicts import PropertyResult

NAME = "attach"
TITLE = "attach never starts a second run of one request"
OPEN_STATES = ("PENDING", "RUNNING")


def _triple_read(run_reads: list[Op]) -> tuple[str, str] | None:
    """A run's agent type and user, as its status says (reads carry no params)."""
    for op in run_reads:
        body = op.body if isinstance(op.body, dict) else {}
        agent_type, user_id = body.get("agent_type"), body.get("user_id")
        if isinstance(agent_type, str) and isinstance(user_id, str):
            return agent_type, user_id.lower()
    return None


def check_attach(
    history: History,
    accepted: Mapping[str, Accepted],
    reads: Mapping[str, list[Op]],
    trusted: Callable[[Op], bool],
    replaced: Mapping[str, set[str]],
    terminated: dict[str, list[float]],
) -> PropertyResult:
    """``replaced``: each replaced run and the runs that replaced it
    (:func:`chaos.facts.replacements`); ``terminated``: when each scope's coordinator was."""
    violations: list[str] = []
    checked = 0
    unknown = 0
    for op in history.ops:
        run_id = attached_id(op)
        if run_id is None:
            continue
        checked += 1
        wanted = triple_of(start_body(op))
        found: tuple[str, ...] | None = _triple_read(reads.get(run_id, []))
        if run_id in accepted:
            found = accepted[run_id].triple
        if found is None:
            unknown += 1
        elif found != wanted[: len(found)]:
            violations.append(
                f"an attach sent {stamp(op.started)} for {wanted} was answered 200 with "
                f"{run_id}, a run of {found}"
            )
    cancels: dict[str, float] = {}
    for op in history.ops:
        if op.kind == "cancel":
            target = str(op.request.get("run_id"))
            cancels[target] = min(cancels.get(target, op.started), op.started)
    by_triple: dict[tuple[str, tuple[str, str, str]], list[Accepted]] = {}
    for run in accepted.values():
        by_triple.setdefault((run.scope, run.triple), []).append(run)
    for new in accepted.values():
        if new.on_busy != "attach":
            continue
        checked += 1
        for other in by_triple[(new.scope, new.triple)]:
            if other is new or other.answered >= new.sent:
                continue
            if cancels.get(other.run_id, math.inf) < new.answered:
                continue
            replacers = replaced.get(other.run_id, set())
            if any(accepted[r].sent < new.answered if r in accepted else True for r in replacers):
                continue
            still = next(
                (
                    read
                    for read in reads.get(other.run_id, [])
                    if read.started > new.answered
                    and state_of(read) in OPEN_STATES
                    and trusted(read)
                ),
                None,
            )
            if still is None:
                continue
            cause = terminated_between(terminated, new.scope, other.answered, new.answered)
            violations.append(
                f"{new.run_id} (attach, sent {stamp(new.sent)}, 202 at {stamp(new.answered)}) "
                f"is a new run while {other.run_id} ({other.on_busy}, 202 at "
                f"{stamp(other.answered)}) of the same request was open: read "
                f"{state_of(still)} in a read sent {stamp(still.started)}{cause}"
            )
            break
    notes = [
        f"attach answers checked: {checked} "
        f"({sum(1 for run in accepted.values() if run.on_busy == 'attach')} new runs)"
    ]
    if unknown:
        notes.append(f"attached runs whose request is not known (never read): {unknown}")
    return PropertyResult(
        name=NAME, title=TITLE, checked=checked, violations=violations, notes=notes
    )
