"""Property (k): a run that expired in its queue never started.

A run read ``ERROR`` "expired in queue" (its ``queue_timeout_seconds`` passed while it waited)
must have: no grant (no status read of it ever carried ``started_at``: :mod:`chaos.grants`), no
agent span (no ``agent_start`` line of it: :mod:`chaos.spans`), a start sent with
``queue_timeout_seconds`` (the chaos stack sets no default, and its agents none of their own),
and no read saying so that was answered before that many seconds after its start was sent (it
was queued after that, at the earliest).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from agent_runner.contract import EXPIRED_IN_QUEUE
from chaos.facts import Accepted, stamp, state_of
from chaos.grants import GrantOrder
from chaos.history import Op
from chaos.spans import Span
from chaos.verdicts import PropertyResult

NAME = "expired"
TITLE = "a run expired in its queue never started"


def _expired_reads(run_reads: Sequence[Op]) -> list[Op]:
    return [
        op
        for op in run_reads
        if state_of(op) == "ERROR" and op.body.get("error") == EXPIRED_IN_QUEUE
    ]


def check_expired(
    accepted: Mapping[str, Accepted],
    reads: Mapping[str, list[Op]],
    grants: GrantOrder,
    spans: Sequence[Span],
) -> PropertyResult:
    granted = {grant.run_id: grant for scope in grants.values() for grant in scope}
    started: dict[str, Span] = {}
    for span in spans:
        started.setdefault(span.run_id, span)
    violations: list[str] = []
    expired = 0
    with_timeout = sum(1 for run in accepted.values() if run.queue_timeout is not None)
    for run_id, run in accepted.items():
        said = _expired_reads(reads.get(run_id, []))
        if not said:
            continue
        expired += 1
        first = min(said, key=lambda op: op.ended)
        where = (
            f"{run_id} ({run.on_busy}, sent {stamp(run.sent)}), read expired at "
            f"{stamp(first.ended)}"
        )
        if run_id in granted:
            violations.append(f"{where}: granted a slot by {stamp(granted[run_id].latest)}")
        if run_id in started:
            violations.append(f"{where}: its agent started: {started[run_id].describe()}")
        if run.queue_timeout is None:
            violations.append(f"{where}: its start had no queue_timeout_seconds")
        elif first.ended < run.sent + run.queue_timeout:
            violations.append(
                f"{where}: before its queue_timeout_seconds ({run.queue_timeout:g}) had passed"
            )
    notes = [f"runs sent with queue_timeout_seconds: {with_timeout}, of which expired: {expired}"]
    return PropertyResult(
        name=NAME, title=TITLE, checked=expired, violations=violations, notes=notes
    )
