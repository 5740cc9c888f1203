"""Finding the run an Idempotency-Key started, from Temporal visibility (no database of ours).

Visibility is updated a moment after a run starts. Within that moment a repeat of a request is
still safe while the first run is open (the start collides with it, and its memo names the key)
or queued (the queue remembers the key); a first run that started *and ended* inside that
moment is the one case a repeat could start again (docs/RELIABILITY.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from temporalio.client import Client, WorkflowExecution

from agent_runner import search_attributes
from agent_runner.locations import SlotRun, parse_workflow_id
from agent_runner.runs.types import RunTarget


@dataclass(frozen=True)
class EarlierRun:
    run_id: str
    fingerprint: str


async def earlier_run(client: Client, target: RunTarget, key: str) -> EarlierRun | None:
    """The run started with ``key``, if visibility knows it. ``key`` matches the API's
    Idempotency-Key pattern, which keeps it safe to quote in the query."""
    query = (
        f"WorkflowId STARTS_WITH '{target.workflow_id}' AND "
        f"{search_attributes.IDEMPOTENCY_KEY.name} = '{key}'"
    )
    async for execution in client.list_workflows(query, rpc_timeout=target.rpc_timeout):
        run_id = await client_run_id(target, execution)
        if run_id is not None:
            return EarlierRun(run_id, (await execution.memo()).get("request_fingerprint", ""))
    return None


async def client_run_id(target: RunTarget, execution: WorkflowExecution) -> str | None:
    """The run id clients know for a slot execution of ours; None if it is not one."""
    memo = await execution.memo()
    if isinstance(memo.get("queued_id"), str):
        queued: str = memo["queued_id"]
        return queued
    where = parse_workflow_id(target.workflow_id, execution.id)
    if where is None:
        return None
    scope, slot = where
    return None if slot is None else SlotRun(scope, slot, execution.run_id).run_id
