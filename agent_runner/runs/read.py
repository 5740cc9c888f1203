"""Reading runs: a run's status, waiting for it to change, the open run, and cancelling one.

Every read goes to the Temporal server (``describe`` and the run's close event), so it works
from any replica and with no worker running.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, timedelta
from typing import Any

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
from temporalio.service import RPCError, RPCStatusCode

from agent_runner.models import AgentRunResult, FailureDetails
from agent_runner.runs.errors import NOT_FOUND, RunFinishedError, RunNotFoundError, temporal_call
from agent_runner.runs.handoff import MAY_BE_WORKING
from agent_runner.runs.stuck import terminate
from agent_runner.runs.types import RunState, RunStatus, RunTarget

# The error of a run that was cancelled, however it was stopped.
CANCELLED = "cancelled"
# Events of a run whose agent activity was never scheduled: started, workflow task scheduled,
# started, completed. A longer history with no pending activity means the agent has finished
# and the workflow is completing.
_EVENTS_BEFORE_AGENT = 4


def run_handle(
    client: Client, target: RunTarget, run_id: str | None
) -> WorkflowHandle[Any, AgentRunResult]:
    return client.get_workflow_handle(target.workflow_id, run_id=run_id, result_type=AgentRunResult)


async def describe_run(
    handle: WorkflowHandle[Any, Any], target: RunTarget
) -> WorkflowExecutionDescription:
    try:
        return await handle.describe(rpc_timeout=target.rpc_timeout)
    except RPCError as err:
        if err.status in NOT_FOUND:
            raise RunNotFoundError(handle.run_id) from None
        raise


async def get_run_status(client: Client, run_id: str | None, *, target: RunTarget) -> RunStatus:
    """Read a run's state from the server; works with no worker running.

    ``run_id=None`` reads the latest run of the workflow id.
    """
    handle = run_handle(client, target, run_id)
    with temporal_call():
        description = await describe_run(handle, target)
        memo = await description.memo()
        base: dict[str, Any] = {
            "run_id": description.run_id,
            "agent_type": memo.get("agent_type"),
            "user_id": memo.get("user_id"),
            "started_at": description.start_time,
            "finished_at": description.close_time,
        }
        if description.status == WorkflowExecutionStatus.RUNNING:
            return _open_run_status(description, base)
        closed = run_handle(client, target, description.run_id)
        event = await _close_event(closed, wait=False, rpc_timeout=target.rpc_timeout)
        return await _closed_run_status(client, base, event)


async def wait_for_change(
    client: Client,
    run_id: str,
    *,
    wait: timedelta,
    target: RunTarget,
    poll_interval: timedelta = timedelta(milliseconds=250),
) -> RunStatus:
    """The run's status as soon as its state changes or it finishes, at the latest after ``wait``.

    The finish arrives by Temporal's own long poll on the run's close event, so a waiting
    caller learns of it at once; PENDING -> RUNNING is noticed within ``poll_interval``. Should
    the long poll fail (the server restarting, say), it is tried again a poll interval later,
    never in a tight loop.
    """
    first = await get_run_status(client, run_id, target=target)
    if first.is_final:
        return first
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait.total_seconds()
    handle = run_handle(client, target, run_id)
    pause = poll_interval.total_seconds()
    closed = asyncio.ensure_future(_close_event(handle, wait=True, rpc_timeout=wait))
    try:
        current = first
        while (remaining := deadline - loop.time()) > 0 and current.state == first.state:
            await asyncio.wait({closed}, timeout=min(remaining, pause))
            if closed.done():
                if closed.exception() is None:
                    with temporal_call():
                        return await _closed_run_status(client, _base(first), closed.result())
                await asyncio.sleep(min(pause, max(0.0, deadline - loop.time())))
                closed = asyncio.ensure_future(
                    _close_event(handle, wait=True, rpc_timeout=timedelta(seconds=remaining))
                )
            current = await get_run_status(client, run_id, target=target)
        return current
    finally:
        closed.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await closed


async def wait_for_end(
    client: Client, run_id: str, *, wait: timedelta, target: RunTarget
) -> RunStatus:
    """The run's final status as soon as it closes; its current status after ``wait``."""
    handle = run_handle(client, target, run_id)
    first = await get_run_status(client, run_id, target=target)
    if first.is_final:
        return first
    try:
        event = await _close_event(handle, wait=True, rpc_timeout=wait)
    except RPCError as err:
        if err.status != RPCStatusCode.DEADLINE_EXCEEDED:
            raise
        return await get_run_status(client, run_id, target=target)
    with temporal_call():
        return await _closed_run_status(client, _base(first), event)


async def get_current_run(client: Client, *, target: RunTarget) -> RunStatus | None:
    """The open run, if there is one."""
    try:
        status = await get_run_status(client, None, target=target)
    except RunNotFoundError:
        return None
    return None if status.is_final else status


async def cancel_run(
    client: Client, run_id: str, *, target: RunTarget, wait: timedelta = timedelta(seconds=3)
) -> RunStatus:
    """Stop an open run and return its status once it ended, or after ``wait``.

    A run whose agent is working is cancelled: the agent sees it within about half a second and
    stops, then the run ends ERROR ``cancelled``. A run with no agent working yet (waiting for a
    worker, or for the previous agent on its slot to stop) is ended at once the same way; an
    attempt handed out at that very moment confirms its lease first, finds the run gone and
    never starts. If the agent finished before the cancel reached it, the returned status is
    DONE: the cancel came too late.
    """
    handle = run_handle(client, target, run_id)
    with temporal_call():
        description = await describe_run(handle, target)
        if description.status != WorkflowExecutionStatus.RUNNING:
            raise RunFinishedError(run_id)
        if agent_may_be_working(description):
            await handle.cancel(rpc_timeout=target.rpc_timeout)
        else:
            await terminate(client, description, CANCELLED, target)
        return await wait_for_end(client, run_id, wait=wait, target=target)


def agent_may_be_working(description: WorkflowExecutionDescription) -> bool:
    """Whether an attempt of the run's agent may be working right now (its worker holds it)."""
    return any(
        pending.state in MAY_BE_WORKING
        for pending in description.raw_description.pending_activities
    )


def _base(status: RunStatus) -> dict[str, Any]:
    """What an open run's describe said that still holds once it has closed."""
    return {
        "run_id": status.run_id,
        "agent_type": status.agent_type,
        "user_id": status.user_id,
        "started_at": status.started_at,
    }


async def _close_event(
    handle: WorkflowHandle[Any, Any], *, wait: bool, rpc_timeout: timedelta
) -> HistoryEvent:
    """The run's close event: one RPC that carries its outcome and when it happened; with
    ``wait``, the server holds the call until the run closes (a long poll)."""
    async for event in handle.fetch_history_events(
        wait_new_event=wait,
        event_filter_type=WorkflowHistoryEventFilterType.CLOSE_EVENT,
        rpc_timeout=rpc_timeout,
    ):
        return event
    raise RunNotFoundError(handle.run_id)


async def _closed_run_status(
    client: Client, base: dict[str, Any], event: HistoryEvent
) -> RunStatus:
    closed = {**base, "finished_at": event.event_time.ToDatetime(tzinfo=UTC)}
    if event.HasField("workflow_execution_completed_event_attributes"):
        [output] = await client.data_converter.decode_wrapper(
            event.workflow_execution_completed_event_attributes.result, [AgentRunResult]
        )
        return RunStatus(
            **closed, state=RunState.DONE, result=output.result, error=None, attempt=output.attempt
        )
    reason, attempt = "closed", 0
    if event.HasField("workflow_execution_failed_event_attributes"):
        cause = await client.data_converter.decode_failure(
            event.workflow_execution_failed_event_attributes.failure
        )
        reason, attempt = _failure_reason_and_attempt(cause)
    elif event.HasField("workflow_execution_canceled_event_attributes"):
        reason = "cancelled"
    elif event.HasField("workflow_execution_terminated_event_attributes"):
        terminated = event.workflow_execution_terminated_event_attributes.reason
        reason = CANCELLED if terminated == CANCELLED else f"terminated: {terminated}"
    elif event.HasField("workflow_execution_timed_out_event_attributes"):
        reason = "timed out"
    return RunStatus(**closed, state=RunState.ERROR, result=None, error=reason, attempt=attempt)


def _open_run_status(description: WorkflowExecutionDescription, base: dict[str, Any]) -> RunStatus:
    pending = description.raw_description.pending_activities
    if pending:
        activity = pending[0]
        has_run = (
            activity.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
            or activity.attempt > 1
        )
        state = RunState.RUNNING if has_run else RunState.PENDING
        attempt = activity.attempt if has_run else 0
    elif description.history_length > _EVENTS_BEFORE_AGENT:
        state, attempt = RunState.RUNNING, 0
    else:
        state, attempt = RunState.PENDING, 0
    return RunStatus(**base, state=state, result=None, error=None, attempt=attempt)


def _failure_reason_and_attempt(cause: BaseException) -> tuple[str, int]:
    if isinstance(cause, ApplicationError):
        details = FailureDetails.from_details(cause.details)
        return cause.message, details.attempt if details else 0
    return str(cause), 0
