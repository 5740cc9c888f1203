"""A run's status, wherever it is: queued, holding a slot, or finished.

Every read goes to the Temporal server (``describe`` and a run's close event), from the
location the run id names (:mod:`agent_runner.locations`), so it works from any replica and
with no worker running.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
)

from agent_runner.locations import QueuedRun, RunRef, SlotRun, parse_run_id
from agent_runner.runs.errors import RunNotFoundError, temporal_call
from agent_runner.runs.slot_status import (
    CANCELLED,
    close_event,
    describe,
    parse_time,
    slot_run_status,
)
from agent_runner.runs.types import (
    WAITING_QUEUE,
    RunState,
    RunStatus,
    RunTarget,
)

# Queue executions a queued run may have been carried through (continue-as-new) to follow.
_MAX_QUEUE_HOPS = 50


def locate(target: RunTarget, run_id: str) -> RunRef:
    """Where the run lives; :class:`RunNotFoundError` for an id this service never gave out."""
    ref = parse_run_id(target.workflow_id, run_id)
    if ref is None:
        raise RunNotFoundError(run_id)
    return ref


async def get_run_status(client: Client, run_id: str, *, target: RunTarget) -> RunStatus:
    """Read a run's state from the server; works with no worker running."""
    ref = locate(target, run_id)
    with temporal_call():
        if isinstance(ref, SlotRun):
            return await slot_run_status(client, target, ref.workflow_id, ref.temporal_run_id)
        return await _queued_run_status(client, target, ref)


async def get_current_run(client: Client, *, target: RunTarget) -> RunStatus | None:
    """The oldest open run of the deployment, if any."""
    with temporal_call():
        if target.slots == 1 and target.scope_kind.value == "global":
            try:
                status = await slot_run_status(client, target, target.workflow_id, None)
            except RunNotFoundError:
                return None
            return None if status.is_final else status
        query = (
            f"WorkflowType = 'AgentRunWorkflow' AND ExecutionStatus = 'Running' AND "
            f"WorkflowId STARTS_WITH '{target.workflow_id}'"
        )
        oldest = None
        async for execution in client.list_workflows(query, rpc_timeout=target.rpc_timeout):
            if oldest is None or (execution.start_time < oldest.start_time):
                oldest = execution
        if oldest is None:
            return None
        return await slot_run_status(client, target, oldest.id, oldest.run_id)


async def _queued_run_status(client: Client, target: RunTarget, ref: QueuedRun) -> RunStatus:
    """Follow the run through the queue executions that carried it to where it is now."""
    queue_run_id: str | None = ref.queue_run_id
    for _ in range(_MAX_QUEUE_HOPS):
        handle = client.get_workflow_handle(ref.workflow_id, run_id=queue_run_id)
        description = await describe(handle, target)
        memo = await description.memo()
        where = memo.get(f"r:{ref.run_id}")
        if not isinstance(where, dict):
            raise RunNotFoundError(ref.run_id)
        state = where.get("state")
        carried = state in ("queued", "claimed")
        if carried and description.status == WorkflowExecutionStatus.CONTINUED_AS_NEW:
            event = await close_event(handle, wait=False, target=target)
            queue_run_id = (
                event.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
            )
            continue
        return await _where_queued_run_is(client, target, ref, description, memo, where)
    raise RunNotFoundError(ref.run_id)


async def _where_queued_run_is(
    client: Client,
    target: RunTarget,
    ref: QueuedRun,
    queue: WorkflowExecutionDescription,
    memo: Mapping[str, Any],
    where: Mapping[str, Any],
) -> RunStatus:
    state = where.get("state")
    slot = where.get("slot")
    if state == "started" and isinstance(slot, int):
        return await slot_run_status(
            client, target, ref.scope.slot_id(slot), where.get("temporal_run_id")
        )
    if state == "claimed" and isinstance(slot, int):
        # The run that claimed it is handing over its slot: it runs there soon, or already.
        current = await slot_run_status(client, target, ref.scope.slot_id(slot), None)
        if current.run_id == ref.run_id:
            return current
    base = RunStatus(
        run_id=ref.run_id,
        agent_type=where.get("agent_type"),
        user_id=where.get("user_id"),
        state=RunState.PENDING,
        result=None,
        error=None,
        attempt=0,
        started_at=None,
        queued_at=parse_time(where.get("enqueued_at")),
        finished_at=None,
        workflow_id=queue.id,
        temporal_run_id=queue.run_id,
    )
    if state == "cancelled":
        return replace(
            base, state=RunState.ERROR, error=CANCELLED, finished_at=parse_time(where["at"])
        )
    if queue.status != WorkflowExecutionStatus.RUNNING and state == "queued":
        return replace(
            base, state=RunState.ERROR, error="the queue it waited in was stopped (terminated)"
        )
    if state != "queued":
        return base
    return replace(base, queue_position=_position(ref, memo), waiting_for=WAITING_QUEUE)


def _position(ref: QueuedRun, memo: Mapping[str, Any]) -> int:
    """1 + how many runs still queued were accepted before this one."""
    ahead = 0
    for key, value in memo.items():
        if key.startswith("r:") and isinstance(value, dict) and value.get("state") == "queued":
            other = parse_run_id(ref.scope.base, key[2:])
            if isinstance(other, QueuedRun) and other.number < ref.number:
                ahead += 1
    return ahead + 1
