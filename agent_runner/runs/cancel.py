"""Cancelling a run: take it out of its queue, or stop its agent."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import Client, WorkflowExecutionDescription, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from agent_runner.locations import QueuedRun
from agent_runner.queue_types import CANCEL_UPDATE
from agent_runner.runs.errors import RunFinishedError, temporal_call
from agent_runner.runs.handoff import MAY_BE_WORKING
from agent_runner.runs.slot_status import CANCELLED, describe
from agent_runner.runs.status import get_run_status, locate
from agent_runner.runs.stuck import terminate
from agent_runner.runs.types import RunStatus, RunTarget
from agent_runner.runs.waiting import wait_for_end


async def cancel_run(
    client: Client, run_id: str, *, target: RunTarget, wait: timedelta = timedelta(seconds=3)
) -> RunStatus:
    """Stop an open run and return its status once it ended, or after ``wait``.

    A queued run leaves its queue at once, never having started (the runs behind it move up). A
    run whose agent is working is cancelled: the agent sees it within about half a second and
    stops, then the run ends ERROR ``cancelled``. A run with no agent working yet (waiting for a
    worker, or for the previous agent on its slot to stop) is ended at once the same way; an
    attempt handed out at that very moment confirms its lease first, finds the run gone and
    never starts. If the agent finished before the cancel reached it, the returned status is
    DONE: the cancel came too late.
    """
    ref = locate(target, run_id)
    with temporal_call():
        status = await get_run_status(client, run_id, target=target)
        if status.is_final:
            raise RunFinishedError(run_id)
        if isinstance(ref, QueuedRun) and status.queue_position is not None:
            if await _take_out_of_queue(client, target, ref, run_id):
                return await get_run_status(client, run_id, target=target)
            status = await get_run_status(client, run_id, target=target)  # it just started
        assert status.workflow_id is not None
        handle = client.get_workflow_handle(status.workflow_id, run_id=status.temporal_run_id)
        description = await describe(handle, target)
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


async def _take_out_of_queue(
    client: Client, target: RunTarget, ref: QueuedRun, run_id: str
) -> bool:
    """Ask the queue (the latest execution of the scope's queue workflow) to drop the run."""
    handle = client.get_workflow_handle(ref.workflow_id)
    try:
        dropped: bool = await handle.execute_update(
            CANCEL_UPDATE, run_id, result_type=bool, rpc_timeout=target.rpc_timeout
        )
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return dropped
