"""The status of a run holding a slot, read from its slot execution: ``describe`` while it is
open (its pending activity says whether an attempt works, its heartbeats carry the progress),
its close event once it has closed, its memo once it has handed its slot over."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from temporalio.api.common.v1 import Payloads
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowHistoryEventFilterType,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from agent_runner.locations import SlotRun, parse_workflow_id
from agent_runner.models import AgentRunResult, FailureDetails
from agent_runner.runs.errors import NOT_FOUND, RunNotFoundError
from agent_runner.runs.types import (
    WAITING_PREVIOUS_AGENT,
    WAITING_WORKER,
    AttemptFailure,
    Progress,
    RunState,
    RunStatus,
    RunTarget,
)

# The error of a run that was cancelled, however it was stopped.
CANCELLED = "cancelled"


# Events of a run whose agent activity was never scheduled: started, workflow task scheduled,
# started, completed. A longer history with no pending activity means the agent has finished
# and the workflow is completing, unless the run waits for the previous agent on its slot to
# stop (its memo says until when).
_EVENTS_BEFORE_AGENT = 4


async def slot_run_status(
    client: Client, target: RunTarget, workflow_id: str, temporal_run_id: str | None
) -> RunStatus:
    """The status of the run a slot execution holds (``None``: the slot's latest)."""
    handle = client.get_workflow_handle(workflow_id, run_id=temporal_run_id)
    description = await describe(handle, target)
    return await status_of(client, target, description)


async def status_of(
    client: Client, target: RunTarget, description: WorkflowExecutionDescription
) -> RunStatus:
    memo = await description.memo()
    base = RunStatus(
        run_id=_client_run_id(target, description, memo),
        agent_type=memo.get("agent_type"),
        user_id=memo.get("user_id"),
        state=RunState.PENDING,
        result=None,
        error=None,
        attempt=0,
        started_at=description.start_time,
        finished_at=description.close_time,
        workflow_id=description.id,
        temporal_run_id=description.run_id,
        queued_at=parse_time(memo.get("queued_at")),
    )
    if description.status == WorkflowExecutionStatus.RUNNING:
        return await _open_run_status(
            client, description, base, waiting=bool(memo.get("waiting_until"))
        )
    if description.status == WorkflowExecutionStatus.CONTINUED_AS_NEW:
        return handed_over_status(base, memo.get("outcome"))
    handle = client.get_workflow_handle(description.id, run_id=description.run_id)
    event = await close_event(handle, wait=False, target=target)
    return await closed_run_status(client, base, event, memo.get("outcome"))


async def describe(
    handle: WorkflowHandle[Any, Any], target: RunTarget
) -> WorkflowExecutionDescription:
    try:
        return await handle.describe(rpc_timeout=target.rpc_timeout)
    except RPCError as err:
        if err.status in NOT_FOUND:
            raise RunNotFoundError(handle.run_id) from None
        raise


async def close_event(
    handle: WorkflowHandle[Any, Any], *, wait: bool, target: RunTarget, rpc_timeout: Any = None
) -> HistoryEvent:
    """The run's close event: one RPC that carries its outcome and when it happened; with
    ``wait``, the server holds the call until the run closes (a long poll)."""
    async for event in handle.fetch_history_events(
        wait_new_event=wait,
        event_filter_type=WorkflowHistoryEventFilterType.CLOSE_EVENT,
        rpc_timeout=rpc_timeout or target.rpc_timeout,
    ):
        return event
    raise RunNotFoundError(handle.run_id)


async def closed_run_status(
    client: Client, base: RunStatus, event: HistoryEvent, outcome: object = None
) -> RunStatus:
    """From the close event; ``outcome`` (the run's memo, when the reader has it) says which
    attempt a cancel stopped, else the attempt the reader last saw stands."""
    closed = replace(base, finished_at=event.event_time.ToDatetime(tzinfo=UTC))
    if event.HasField("workflow_execution_completed_event_attributes"):
        [output] = await client.data_converter.decode_wrapper(
            event.workflow_execution_completed_event_attributes.result, [AgentRunResult]
        )
        return replace(closed, state=RunState.DONE, result=output.result, attempt=output.attempt)
    reason, attempt = "closed", 0
    if event.HasField("workflow_execution_failed_event_attributes"):
        cause = await client.data_converter.decode_failure(
            event.workflow_execution_failed_event_attributes.failure
        )
        reason, attempt = _failure_reason_and_attempt(cause)
    elif event.HasField("workflow_execution_canceled_event_attributes"):
        reason = CANCELLED
        attempt = base.attempt
        if isinstance(outcome, dict) and isinstance(outcome.get("attempt"), int):
            attempt = outcome["attempt"]
    elif event.HasField("workflow_execution_terminated_event_attributes"):
        terminated = event.workflow_execution_terminated_event_attributes.reason
        reason = CANCELLED if terminated == CANCELLED else f"terminated: {terminated}"
    elif event.HasField("workflow_execution_timed_out_event_attributes"):
        reason = "timed out"
    return replace(closed, state=RunState.ERROR, error=reason, attempt=attempt)


def _client_run_id(
    target: RunTarget, description: WorkflowExecutionDescription, memo: Mapping[str, Any]
) -> str:
    if isinstance(memo.get("queued_id"), str):
        queued: str = memo["queued_id"]
        return queued
    where = parse_workflow_id(target.workflow_id, description.id)
    if where is None or where[1] is None:
        return description.run_id
    return SlotRun(where[0], where[1], description.run_id).run_id


def handed_over_status(base: RunStatus, outcome: object) -> RunStatus:
    """A run that handed its slot to a queued run: its memo says how it ended."""
    if not isinstance(outcome, dict):
        return replace(base, state=RunState.ERROR, error="closed")
    done = outcome.get("state") == "DONE"
    return replace(
        base,
        state=RunState.DONE if done else RunState.ERROR,
        result=outcome.get("result") if done else None,
        error=None if done else str(outcome.get("error") or "failed"),
        attempt=int(outcome.get("attempt") or 0),
    )


async def _open_run_status(
    client: Client, description: WorkflowExecutionDescription, base: RunStatus, *, waiting: bool
) -> RunStatus:
    """PENDING until an attempt of the agent has started; RUNNING from then on, through its
    retries and the moment between the agent's end and the run's close."""
    pending = description.raw_description.pending_activities
    if pending:
        activity = pending[0]
        started = activity.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        if not started and activity.attempt <= 1:
            return replace(base, waiting_for=WAITING_WORKER)
        failure = None
        if activity.attempt > 1 and activity.HasField("last_failure"):
            reason = activity.last_failure.message
            failure = AttemptFailure(activity.attempt - 1, reason, retrying=True)
        progress = None
        if started and activity.HasField("heartbeat_details"):
            progress = await _progress(client, activity.heartbeat_details, activity.attempt)
        return replace(
            base,
            state=RunState.RUNNING,
            attempt=activity.attempt,
            progress=progress,
            last_failure=failure,
        )
    if waiting:
        return replace(base, waiting_for=WAITING_PREVIOUS_AGENT)
    if description.history_length > _EVENTS_BEFORE_AGENT:
        return replace(base, state=RunState.RUNNING)
    return base


async def _progress(client: Client, details: Payloads, attempt: int) -> Progress | None:
    """The progress the attempt's heartbeats carry (see activities/context.py)."""
    try:
        [reported] = await client.data_converter.decode(details.payloads)
        if reported.get("attempt") != attempt:
            return None  # the heartbeat of an earlier attempt
        return Progress(float(reported["fraction"]), str(reported["message"]), attempt)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def _failure_reason_and_attempt(cause: BaseException) -> tuple[str, int]:
    if isinstance(cause, ApplicationError):
        details = FailureDetails.from_details(cause.details)
        return cause.message, details.attempt if details else 0
    return str(cause), 0


def parse_time(value: object) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None
