"""Reading a run's execution on its slot from the Temporal server: one ``describe`` (and its close
event) into an :class:`~agent_runner.status.ExecutionView`, or its history, event by event, into
the same view as it unfolds. Only the server is asked: no worker needs to be running.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowHistoryEventFilterType,
)
from temporalio.exceptions import ApplicationError, CancelledError

from agent_runner.contract import (
    CLAIM_ATTEMPT,
    PROGRESS,
    AgentRunResult,
    AttemptClaim,
    FailureDetails,
    Progress,
    RunOutcome,
    RunState,
)
from agent_runner.lease import lease_seconds
from agent_runner.status import AttemptFailure, ExecutionView

_ATTEMPT_ID = re.compile(r"^attempt-(?P<n>[1-9][0-9]{0,3})$")
# Closes that our run workflow's own code makes, after its agents stopped.
CLEAN_CLOSES = {
    WorkflowExecutionStatus.COMPLETED,
    WorkflowExecutionStatus.FAILED,
    WorkflowExecutionStatus.CANCELED,
    WorkflowExecutionStatus.CONTINUED_AS_NEW,
}
CLOSE_EVENTS = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
}
CANCELLED = "cancelled"


async def describe_view(client: Client, description: WorkflowExecutionDescription) -> ExecutionView:
    """The view of a run's execution from its description (and, once closed, its close
    event)."""
    memo = await description.memo()
    view = ExecutionView(
        workflow_id=description.id,
        temporal_run_id=description.run_id,
        started_at=description.start_time,
        last_failure=_failure(memo.get("last_failure")),
        waiting_until=_time(memo.get("waiting_until")),
        agent_type=_text(memo, "agent_type"),
        user_id=_text(memo, "user_id"),
        run_id=_text(memo, "run_id"),
    )
    if description.status != WorkflowExecutionStatus.RUNNING:
        handle = client.get_workflow_handle(description.id, run_id=description.run_id)
        event = await close_event(handle)
        return replace(view, outcome=await outcome_of(client, event, view.attempt))
    attempts = [
        (int(match["n"]), pending)
        for pending in description.raw_description.pending_activities
        if (match := _ATTEMPT_ID.fullmatch(pending.activity_id))
    ]
    if not attempts:
        attempt = view.last_failure.attempt if view.last_failure else 0
        return replace(view, attempt=attempt, claimed=attempt > 0)
    attempt, pending = max(attempts, key=lambda pair: pair[0])
    working = pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
    claimed = working or attempt > 1 or view.last_failure is not None
    progress = None
    if working and pending.HasField("heartbeat_details"):
        progress = await _progress(client, pending.heartbeat_details.payloads, attempt)
    return replace(
        view,
        attempt=attempt,
        working=working,
        claimed=claimed,
        paused=pending.paused,
        progress=progress,
    )


async def close_event(
    handle: WorkflowHandle[Any, Any], *, wait: bool = False, rpc_timeout: Any = None
) -> HistoryEvent:
    """The execution's close event (with ``wait``, a long poll until it closes)."""
    async for event in handle.fetch_history_events(
        wait_new_event=wait,
        event_filter_type=WorkflowHistoryEventFilterType.CLOSE_EVENT,
        rpc_timeout=rpc_timeout,
    ):
        return event
    raise LookupError(f"{handle.id} has no close event")


async def outcome_of(client: Client, event: HistoryEvent, attempt: int = 0) -> RunOutcome:
    """How a run ended, from its execution's close event."""
    finished_at = event.event_time.ToDatetime(tzinfo=UTC)
    ended = RunOutcome(RunState.ERROR, error="closed", attempt=attempt, finished_at=finished_at)
    if event.HasField("workflow_execution_completed_event_attributes"):
        payloads = event.workflow_execution_completed_event_attributes.result.payloads
        [result] = await client.data_converter.decode(payloads, [AgentRunResult])
        return replace(
            ended, state=RunState.DONE, error=None, result=result.result, attempt=result.attempt
        )
    if event.HasField("workflow_execution_failed_event_attributes"):
        cause = await client.data_converter.decode_failure(
            event.workflow_execution_failed_event_attributes.failure
        )
        details = (
            FailureDetails.from_details(cause.details)
            if isinstance(cause, ApplicationError)
            else None
        )
        reason = cause.message if isinstance(cause, ApplicationError) else str(cause)
        return replace(ended, error=reason, attempt=details.attempt if details else attempt)
    if event.HasField("workflow_execution_canceled_event_attributes"):
        payloads = event.workflow_execution_canceled_event_attributes.details.payloads
        details = None
        if payloads:
            decoded = await client.data_converter.decode(payloads)
            details = FailureDetails.from_details(decoded)
        return replace(ended, error=CANCELLED, attempt=details.attempt if details else attempt)
    if event.HasField("workflow_execution_terminated_event_attributes"):
        reason = event.workflow_execution_terminated_event_attributes.reason
        return replace(ended, error=f"terminated: {reason}" if reason else "terminated")
    if event.HasField("workflow_execution_timed_out_event_attributes"):
        return replace(ended, error="timed out: it ran past the bound of its policy")
    return ended


def drain_lease(memo: Mapping[str, Any]) -> float:
    """How long an agent of a run closed from outside may still work (its policy's lease)."""
    heartbeat = memo.get("heartbeat_timeout_seconds")
    if isinstance(heartbeat, int | float) and not isinstance(heartbeat, bool) and heartbeat > 0:
        return lease_seconds(float(heartbeat))
    return lease_seconds(10.0)


class ExecutionHistory:
    """A run's execution, as its history unfolds one event at a time."""

    def __init__(self, client: Client, view: ExecutionView) -> None:
        self._client = client
        self.view = view
        self.closed = False

    async def apply(self, event: HistoryEvent) -> ExecutionView:
        kind = event.event_type
        view = self.view
        if kind in CLOSE_EVENTS:
            self.closed = True
            view = replace(view, outcome=await outcome_of(self._client, event, view.attempt))
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            view = replace(view, started_at=event.event_time.ToDatetime(tzinfo=UTC))
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled = event.activity_task_scheduled_event_attributes
            match = _ATTEMPT_ID.fullmatch(scheduled.activity_id)
            if match:
                view = replace(view, attempt=int(match["n"]), working=False, progress=None)
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            view = await self._claimed(event, view)
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            view = await self._signaled(event, view)
        elif kind == EventType.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED:
            view = await self._memo_changed(event, view)
        elif kind in _ATTEMPT_ENDS:
            view = replace(view, working=False)
        self.view = view
        return view

    async def _claimed(self, event: HistoryEvent, view: ExecutionView) -> ExecutionView:
        request = event.workflow_execution_update_accepted_event_attributes.accepted_request
        if request.input.name != CLAIM_ATTEMPT.name:
            return view
        try:
            [claim] = await self._client.data_converter.decode(
                request.input.args.payloads, [AttemptClaim]
            )
        except Exception:
            return view
        if claim.attempt != view.attempt:
            return view
        return replace(view, working=True, claimed=True, progress=None, waiting_until=None)

    async def _signaled(self, event: HistoryEvent, view: ExecutionView) -> ExecutionView:
        attributes = event.workflow_execution_signaled_event_attributes
        if attributes.signal_name != PROGRESS.name or not view.working:
            return view
        progress = await _progress(self._client, attributes.input.payloads, view.attempt)
        return replace(view, progress=progress) if progress is not None else view

    async def _memo_changed(self, event: HistoryEvent, view: ExecutionView) -> ExecutionView:
        fields = event.workflow_properties_modified_event_attributes.upserted_memo.fields
        values = await self._client.data_converter.decode(list(fields.values()))
        memo = dict(zip(fields, values, strict=True))
        if "last_failure" in memo:
            view = replace(view, last_failure=_failure(memo["last_failure"]), progress=None)
        if "waiting_until" in memo:
            view = replace(view, waiting_until=_time(memo["waiting_until"]))
        return view


_ATTEMPT_ENDS = {
    EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
    EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED,
    EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT,
    EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED,
}


async def _progress(client: Client, payloads: Any, attempt: int) -> Progress | None:
    """A progress report (a signal's input, or a heartbeat's details) of ``attempt``."""
    try:
        [reported] = await client.data_converter.decode(payloads)
        if not isinstance(reported, dict) or reported.get("attempt") != attempt:
            return None
        progress = Progress(attempt, float(reported["fraction"]), str(reported.get("message", "")))
        # Anyone can signal a run: a report no agent could have sent is not shown.
        return progress if progress.valid else None
    except (ValueError, TypeError, KeyError):
        return None
    except Exception:
        return None


def _failure(value: object) -> AttemptFailure | None:
    if not isinstance(value, dict):
        return None
    try:
        return AttemptFailure(int(value["attempt"]), str(value["reason"]), bool(value["retrying"]))
    except (KeyError, TypeError, ValueError):
        return None


def _time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _text(memo: Mapping[str, Any], key: str) -> str | None:
    value = memo.get(key)
    return value if isinstance(value, str) else None


_ = CancelledError
