"""Property (e): one run per Idempotency-Key.

Every 202 for a key carries the same run id; a request that repeats a key with another body is
refused (never a 202); a repeat with the same body of a key that already had a 202 gets that
run again (a 202, or an outage's 503, never a 409 or 422); and of all the run ids a key was
ever given (in a 202, or in an API's ``run_accepted`` line whose answer may have been lost), at
most one ever had an agent start.

While the coordinator keeps the key, that is: it keeps the newest keys of its scope within a
byte budget (docs/api.md: about 1,050), so a key may be forgotten once the keys made after it
weigh enough, and a repeat after that makes a new run (chaos seed 47129: three keys repeated
after about 970 newer ones). The promise is judged within each stretch the key was surely
kept, from the keys the checker saw made (answers and ``run_accepted`` lines; one it did not
see only makes it stricter).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from chaos.facts import (
    accepted_id,
    attached_id,
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
from workflows.scope_book import KEYS_BYTES_MAX, KEYS_KEPT

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
    logged: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for line in lines:
        if line.event == ACCEPTED_EVENT and line.idempotency_key is not None:
            logged[line.idempotency_key].append((line.at, line.run_id))
    started = {line.run_id for line in lines if line.event == START_EVENT}
    terminated = terminations(history)
    forgotten = _forgotten(history, by_key, logged)
    violations: list[str] = []
    for key, ops in by_key.items():
        problem = None
        moments = sorted(forgotten.get(key, []))
        for index, kept in enumerate(_stretches(ops, moments)):
            # The run ids logged for the key while this stretch lasted.
            since = -math.inf if index == 0 else moments[index - 1]
            until = moments[index] if index < len(moments) else math.inf
            ids = {run_id for at, run_id in logged[key] if since <= at < until}
            problem = problem or _key_problem(key, kept, ids, started)
        if problem is not None:
            body = start_body(ops[0])
            scope = scope_of(history.config.scope, body.get("agent_type"), body.get("user_id"))
            first = min((op.ended for op in ops if accepted_id(op) is not None), default=None)
            if first is not None:
                last = max(op.started for op in ops)
                problem += terminated_between(terminated, scope, first, last)
            violations.append(problem)
    notes = (
        [f"keys the coordinator may have forgotten (its byte budget): {len(forgotten)}"]
        if forgotten
        else []
    )
    return PropertyResult(
        name=NAME, title=TITLE, checked=len(by_key), violations=violations, notes=notes
    )


def _weight(key: str, run_id: str) -> int:
    """A key record's weight as the coordinator counts it (ScopeBook's _key_weight: a keyed
    request always carries its 64-character fingerprint)."""
    return 100 + len(key) + len(run_id) + 64


def _forgotten(
    history: History, by_key: dict[str, list[Op]], logged: dict[str, list[tuple[float, str]]]
) -> dict[str, list[float]]:
    """Per key, the moments from which its coordinator may have forgotten it: the keys of its
    scope made since it was (re)made weigh past the budget, or are KEYS_KEPT."""
    made: dict[str, list[tuple[float, str, str]]] = defaultdict(list)  # scope: (at, key, run)
    for key, ops in by_key.items():
        body = start_body(ops[0])
        scope = scope_of(history.config.scope, body.get("agent_type"), body.get("user_id"))
        seen: dict[str, float] = {}
        for op in ops:
            run_id = accepted_id(op) or attached_id(op)
            if run_id is not None:
                seen[run_id] = min(seen.get(run_id, op.ended), op.ended)
        for at, run_id in logged.get(key, []):
            seen[run_id] = min(seen.get(run_id, at), at)
        made[scope].extend((at, key, run_id) for run_id, at in seen.items())
    found: dict[str, list[float]] = defaultdict(list)
    for records in made.values():
        records.sort()
        for index, (_, key, run_id) in enumerate(records):
            weight, count = _weight(key, run_id), 1
            for later_at, later_key, later_run in records[index + 1 :]:
                if later_key == key:
                    break  # made again: its own stretch
                weight, count = weight + _weight(later_key, later_run), count + 1
                if weight > KEYS_BYTES_MAX or count > KEYS_KEPT:
                    found[key].append(later_at)
                    break
    return dict(found)


def _stretches(ops: Sequence[Op], moments: Sequence[float]) -> list[list[Op]]:
    """The key's starts split at each moment it may have been forgotten (sorted): one list per
    stretch between them, empty where none was sent."""
    stretches: list[list[Op]] = [[] for _ in range(len(moments) + 1)]
    for op in ops:
        stretches[sum(1 for moment in moments if op.started >= moment)].append(op)
    return stretches


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
