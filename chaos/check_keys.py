"""Property (e): one run per Idempotency-Key.

Every 202 for a key carries the same run id; a request that repeats a key with another body is
refused (never a 202); a repeat with the same body of a key that already had a 202 gets that
run again (a 202, or an outage's 503, never a 409 or 422); and of all the run ids a key was
ever given (in a 202, or in an API's ``run_accepted`` line whose answer may have been lost), at
most one ever had an agent start.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from chaos.facts import (
    accepted_id,
    scope_of,
    stamp,
    start_body,
    start_key,
    terminated_between,
    terminations,
)
from chaos.history import History, Op
from chaos.logs import ACCEPTED_EVENT, START_EVENT, LogLine
from chaos.verdicts import PropertyResult

NAME = "keys"
TITLE = "one run per Idempotency-Key"
# Answers a repeat may get without breaking the key's promise: its run, or no answer at all.
REPEAT_ANSWERS = (202, 503, None)


def check_keys(history: History, lines: Sequence[LogLine]) -> PropertyResult:
    by_key: dict[str, list[Op]] = defaultdict(list)
    for op in sorted(history.ops, key=lambda op: op.started):
        key = start_key(op)
        if op.kind == "start" and key is not None:
            by_key[key].append(op)
    logged: dict[str, set[str]] = defaultdict(set)
    for line in lines:
        if line.event == ACCEPTED_EVENT and line.idempotency_key is not None:
            logged[line.idempotency_key].add(line.run_id)
    started = {line.run_id for line in lines if line.event == START_EVENT}
    terminated = terminations(history)
    violations: list[str] = []
    for key, ops in by_key.items():
        problem = _key_problem(key, ops, logged[key], started)
        if problem is not None:
            body = start_body(ops[0])
            scope = scope_of(history.config.scope, body.get("agent_type"), body.get("user_id"))
            first = min((op.ended for op in ops if accepted_id(op) is not None), default=None)
            if first is not None:
                last = max(op.started for op in ops)
                problem += terminated_between(terminated, scope, first, last)
            violations.append(problem)
    return PropertyResult(name=NAME, title=TITLE, checked=len(by_key), violations=violations)


def _key_problem(key: str, ops: Sequence[Op], logged: set[str], started: set[str]) -> str | None:
    answered = [op for op in ops if accepted_id(op) is not None]
    run_ids = sorted({str(accepted_id(op)) for op in answered})
    if len(run_ids) > 1:
        shown = ", ".join(f"{accepted_id(op)} at {stamp(op.ended)}" for op in answered)
        return f"key {key}: 202s with {len(run_ids)} run ids: {shown}"
    if not answered:
        return None
    first = min(answered, key=lambda op: op.ended)
    for op in ops:
        if start_body(op) != start_body(first):
            if op.status == 202:
                return (
                    f"key {key}: a repeat with another body sent at {stamp(op.started)} got 202 "
                    f"{accepted_id(op)}, not 422"
                )
        elif op.started > first.ended and op.status not in REPEAT_ANSWERS:
            return (
                f"key {key}: a repeat of {run_ids[0]} (same body) sent at {stamp(op.started)} "
                f"got {op.status} {op.body!r}"
            )
    ran = sorted((set(run_ids) | logged) & started)
    if len(ran) > 1:
        return f"key {key}: agents started for {len(ran)} run ids: {', '.join(ran)}"
    return None
