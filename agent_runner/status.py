"""A run's status, from its two sources, by one pure function.

A run is in one of two places. While it waits, or until its workflow runs on its slot, its
scope's coordinator says where it is (a :class:`~agent_runner.contract.RunRecord`). Once its
workflow runs on the slot, that execution says how it goes (an :class:`ExecutionView`: read with
one ``describe``, or folded from its history as it unfolds). :func:`run_status` turns the two
into the :class:`RunStatus` that every read serves: the status route, its long poll, the event
stream (whose events are the changes between two statuses: :func:`event_name`), the list and
the queue. Adding a field to the status means adding it here, to the contract and to the
response schema, nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from agent_runner.contract import (
    Progress,
    RunOutcome,
    RunPhase,
    RunRecord,
    RunState,
    Waiting,
)


@dataclass(frozen=True)
class AttemptFailure:
    attempt: int
    reason: str
    # Whether another attempt follows.
    retrying: bool


@dataclass(frozen=True)
class RunStatus:
    run_id: str
    agent_type: str | None
    user_id: str | None
    state: RunState
    result: object = None
    error: str | None = None
    attempt: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # Waiting in a queue: 1 is next. None once it holds a slot (or when it never waited).
    queue_position: int | None = None
    queued_at: datetime | None = None
    # The Temporal execution that holds the run: its slot's (or, while it waits, its
    # coordinator's), and that execution's run id.
    workflow_id: str | None = None
    temporal_run_id: str | None = None
    progress: Progress | None = None
    last_failure: AttemptFailure | None = None
    waiting_for: Waiting | None = None
    # The slot it holds or held.
    slot: int | None = None
    # Its priority in the queue (1 first), and its fairness key when it was given one.
    priority: int | None = None
    fairness_key: str | None = None
    # While it waits: when it leaves the queue unstarted, the runs holding its scope's slots,
    # how many runs are served before it by priority (index 0: priority 1), and about how many
    # seconds until its turn (None: not known).
    queue_expires_at: datetime | None = None
    slot_holders: list[str] | None = None
    ahead: list[int] | None = None
    eta_seconds: float | None = None
    # Cancelled by an on_busy=replace start: that run.
    replaced_by: str | None = None
    # While it waits: its scope is paused.
    scope_paused: bool = False

    @property
    def is_final(self) -> bool:
        return self.state in (RunState.DONE, RunState.ERROR)


@dataclass(frozen=True)
class ExecutionView:
    """What a run's execution on its slot says of it."""

    workflow_id: str
    temporal_run_id: str
    started_at: datetime | None = None
    # The latest attempt scheduled, whether a dispatch of it claimed it (its agent works), and
    # whether any attempt ever did (the run has been RUNNING since).
    attempt: int = 0
    working: bool = False
    claimed: bool = False
    # Its activity was paused from outside.
    paused: bool = False
    progress: Progress | None = None
    last_failure: AttemptFailure | None = None
    # Until when it waits for an agent of an earlier attempt to stop.
    waiting_until: datetime | None = None
    # Set once the execution closed.
    outcome: RunOutcome | None = None
    # Who it works for (its memo), for a run whose record is gone.
    agent_type: str | None = None
    user_id: str | None = None
    run_id: str | None = None


def run_status(
    run_id: str, record: RunRecord | None, execution: ExecutionView | None
) -> RunStatus | None:
    """The run's status; None when neither source knows it."""
    if record is None and execution is None:
        return None
    base = RunStatus(
        run_id=run_id,
        agent_type=record.agent_type if record else execution.agent_type if execution else None,
        user_id=record.user_id if record else execution.user_id if execution else None,
        state=RunState.PENDING,
        queued_at=record.queued_at if record else None,
        started_at=(record.granted_at if record else None)
        or (execution.started_at if execution else None),
        slot=record.slot if record else None,
        priority=record.priority if record else None,
        fairness_key=record.fairness_key if record else None,
        replaced_by=record.replaced_by if record else None,
    )
    if execution is not None:
        return _from_execution(base, execution)
    assert record is not None
    return _from_record(base, record)


def _from_record(base: RunStatus, record: RunRecord) -> RunStatus:
    if record.outcome is not None:
        return _ended(base, record.outcome, record.workflow_id, record.temporal_run_id)
    if record.phase == RunPhase.QUEUED:
        return _with(
            base,
            queue_position=record.queue_position,
            waiting_for=Waiting.QUEUE,
            workflow_id=record.workflow_id,
            queue_expires_at=record.queue_expires_at,
            slot_holders=record.slot_holders,
            ahead=record.ahead,
            eta_seconds=record.eta_seconds,
            scope_paused=record.scope_paused,
        )
    return _with(base, workflow_id=record.workflow_id, temporal_run_id=record.temporal_run_id)


def _from_execution(base: RunStatus, view: ExecutionView) -> RunStatus:
    where = {"workflow_id": view.workflow_id, "temporal_run_id": view.temporal_run_id}
    if view.outcome is not None:
        return _ended(base, view.outcome, view.workflow_id, view.temporal_run_id)
    if not view.claimed:
        waiting = Waiting.WORKER if view.attempt else None
        return _with(base, waiting_for=waiting, **where)
    waiting = None
    if view.paused:
        waiting = Waiting.PAUSED
    elif view.waiting_until is not None:
        waiting = Waiting.PREVIOUS_AGENT
    return _with(
        base,
        state=RunState.RUNNING,
        attempt=view.attempt,
        progress=view.progress,
        last_failure=view.last_failure,
        waiting_for=waiting,
        **where,
    )


def _ended(
    base: RunStatus, outcome: RunOutcome, workflow_id: str | None, temporal_run_id: str | None
) -> RunStatus:
    return _with(
        base,
        state=outcome.state,
        result=outcome.result if outcome.state == RunState.DONE else None,
        error=outcome.error if outcome.state == RunState.ERROR else None,
        attempt=outcome.attempt,
        finished_at=outcome.finished_at,
        workflow_id=workflow_id,
        temporal_run_id=temporal_run_id,
    )


def _with(status: RunStatus, **changes: Any) -> RunStatus:
    return replace(status, **changes)


# --- the events of a run's stream: the changes between two statuses -----------------------------

QUEUED, PENDING, RUNNING, PROGRESS = "queued", "pending", "running", "progress"
ATTEMPT_FAILED, DONE, ERROR = "attempt_failed", "done", "error"
EVENT_NAMES = (QUEUED, PENDING, RUNNING, PROGRESS, ATTEMPT_FAILED, DONE, ERROR)


def event_name(before: RunStatus | None, after: RunStatus) -> str | None:
    """The event a stream shows for the change from ``before`` to ``after``; None when the
    change is nothing a client sees."""
    if after.is_final:
        return DONE if after.state == RunState.DONE else ERROR
    if before is not None and _visible(before) == _visible(after):
        return None
    if after.queue_position is not None:
        return QUEUED
    if after.state == RunState.PENDING:
        return PENDING
    if before is None or before.state != RunState.RUNNING or before.attempt != after.attempt:
        return RUNNING
    if after.last_failure != before.last_failure:
        return ATTEMPT_FAILED
    if after.progress is not None and after.progress != before.progress:
        return PROGRESS
    if after.waiting_for != before.waiting_for:
        return RUNNING
    return None


def _visible(status: RunStatus) -> tuple[object, ...]:
    return (
        status.state,
        status.queue_position,
        status.attempt,
        status.progress,
        status.last_failure,
        status.waiting_for,
    )
