"""Runs that can never make progress by themselves, and ending them with the reason.

Any client can start a workflow on the singleton's id. Most bad starts end ERROR at once in
the workflow itself (bad input, another type, another number of arguments). Two kinds cannot be
caught there, because none of our workflow code ever runs: a start on a task queue no worker
polls, and a workflow task that fails every time it is tried (an undecodable history after a
bad deploy, say). Left alone, either would hold the singleton forever. Once such a run is older
than ``stuck_after``, :func:`end_if_stuck` terminates it with the reason, which the run's status
then shows as its error. A third kind waits on purpose, for a while: a run whose agent no worker
has. It is ended once its agent waited ``worker_wait`` with no worker polling the agent's task
queue (busy workers, which poll, never end a run).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import structlog
from temporalio.api.enums.v1 import EventType, PendingActivityState, TaskQueueType
from temporalio.client import Client, WorkflowExecutionDescription, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from agent_runner.locations import agent_task_queue, parse_workflow_id
from agent_runner.runs.pollers import pollers
from agent_runner.runs.types import RunTarget
from agent_runner.validation import quoted, shortened

logger = structlog.stdlib.get_logger(__name__)
STOPPED_BY_US = "agent-runner ended a run that could not progress"


async def stuck_reason(
    client: Client,
    description: WorkflowExecutionDescription,
    target: RunTarget,
    *,
    stuck_after: timedelta,
    worker_wait: timedelta | None = None,
) -> str | None:
    """Why this open run cannot progress and has been so for ``stuck_after`` (or, waiting
    for a worker that has its agent, for ``worker_wait``), or None."""
    if description.status != WorkflowExecutionStatus.RUNNING:
        return None
    now = datetime.now(UTC)
    task = description.raw_description.pending_workflow_task
    if task.attempt >= 2 and task.HasField("original_scheduled_time"):
        if now - task.original_scheduled_time.ToDatetime(tzinfo=UTC) >= stuck_after:
            cause = await _last_task_failure(client, description)
            return f"its workflow task fails on every attempt ({task.attempt}): {cause}"
        return None
    started = description.start_time
    if started is None or now - started < stuck_after:
        return None
    queue = description.task_queue
    if queue != target.task_queue and not await pollers(
        client, target, queue, TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW
    ):
        return (
            f"it was started on task queue {quoted(queue)}, which no worker polls "
            f"(agent-runner's is {quoted(target.task_queue)})"
        )
    if worker_wait is not None:
        return await _no_worker_has_its_agent(client, description, target, worker_wait)
    return None


async def _no_worker_has_its_agent(
    client: Client,
    description: WorkflowExecutionDescription,
    target: RunTarget,
    worker_wait: timedelta,
) -> str | None:
    pending = description.raw_description.pending_activities
    if not pending or pending[0].state != PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED:
        return None
    activity = pending[0]
    if not activity.HasField("scheduled_time"):
        return None
    waited = datetime.now(UTC) - activity.scheduled_time.ToDatetime(tzinfo=UTC)
    agent_type = (await description.memo()).get("agent_type")
    if waited < worker_wait or not isinstance(agent_type, str):
        return None
    queue = agent_task_queue(description.task_queue, agent_type)
    if await pollers(client, target, queue, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY):
        return None
    return (
        f"no worker that has the {quoted(agent_type)} agent polled its task queue "
        f"{quoted(queue)} for {waited.total_seconds():.0f} s: is the agent type right, and is a "
        "worker with it running?"
    )


async def end_if_stuck(
    client: Client,
    description: WorkflowExecutionDescription,
    target: RunTarget,
    *,
    stuck_after: timedelta,
    worker_wait: timedelta | None = None,
) -> str | None:
    """Terminate the run if it is stuck; returns the reason it was ended for."""
    reason = await stuck_reason(
        client, description, target, stuck_after=stuck_after, worker_wait=worker_wait
    )
    if reason is None:
        return None
    await terminate(client, description, f"{STOPPED_BY_US}: {reason}", target)
    logger.warning(
        "stuck_run_ended",
        workflow_id=description.id,
        run_id=description.run_id,
        reason=reason,
    )
    return reason


async def terminate(
    client: Client, description: WorkflowExecutionDescription, reason: str, target: RunTarget
) -> None:
    """Terminate exactly that run (not whichever run of the id is current); a run that closed
    meanwhile is left as it ended."""
    handle = client.get_workflow_handle(description.id, run_id=description.run_id)
    try:
        await handle.terminate(reason=reason, rpc_timeout=target.rpc_timeout)
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise


async def _last_task_failure(client: Client, description: WorkflowExecutionDescription) -> str:
    handle = client.get_workflow_handle(description.id, run_id=description.run_id)
    cause = "unknown"
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            failure = event.workflow_task_failed_event_attributes.failure
            cause = shortened(failure.message) if failure.message else "unknown"
    return cause


async def watch(
    client: Client,
    target: RunTarget,
    *,
    stuck_after: timedelta,
    worker_wait: timedelta | None = None,
) -> None:
    """Look over the singleton's open runs every quarter of ``stuck_after`` and end those that
    are stuck; runs until cancelled. Every worker runs one: ending a run twice is harmless."""
    query = f"WorkflowId STARTS_WITH '{target.workflow_id}' AND ExecutionStatus = 'Running'"
    while True:
        await asyncio.sleep(max(1.0, stuck_after.total_seconds() / 4))
        try:
            async for execution in client.list_workflows(query, rpc_timeout=target.rpc_timeout):
                if parse_workflow_id(target.workflow_id, execution.id) is None:
                    continue  # another deployment's id that shares our prefix
                handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
                description = await handle.describe(rpc_timeout=target.rpc_timeout)
                await end_if_stuck(
                    client, description, target, stuck_after=stuck_after, worker_wait=worker_wait
                )
        except RPCError as err:
            logger.warning("stuck_run_check_failed", error=err.message)
