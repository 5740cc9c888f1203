"""Putting runs in a scope's queue: one update-with-start call to the queue workflow, which
answers each run's place (or why it refused it)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from agent_runner.locations import Scope
from agent_runner.queue_types import (
    ENQUEUE_UPDATE,
    QUEUE_WORKFLOW_TYPE,
    EnqueueRequest,
    EnqueueResult,
    QueueInput,
)
from agent_runner.runs.errors import TemporalUnavailableError, is_unavailable
from agent_runner.runs.types import RunTarget

# The queue answers once a worker has taken the update: allow it more than one plain call.
QUEUE_ANSWER_TIMEOUT = timedelta(seconds=5)


_NO_ANSWER = "the queue did not answer in time: is a worker running?"


async def enqueue_runs(
    client: Client, target: RunTarget, scope: Scope, requests: Sequence[EnqueueRequest]
) -> list[EnqueueResult]:
    """Put runs in the scope's queue (starting the queue workflow if it is not running) in one
    call; the answers in the same order. Needs a worker: the queue answers from workflow code."""
    start: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
        QUEUE_WORKFLOW_TYPE,
        QueueInput(scope=scope),
        id=scope.queue_id,
        task_queue=target.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        static_summary=f"Queue of {scope.id}",
    )
    budget = max(target.rpc_timeout, QUEUE_ANSWER_TIMEOUT)
    deadline = time.monotonic() + budget.total_seconds()
    while True:
        try:
            results: list[EnqueueResult] = await client.execute_update_with_start_workflow(
                ENQUEUE_UPDATE,
                list(requests),
                start_workflow_operation=start,
                result_type=list[EnqueueResult],
                rpc_timeout=budget,
            )
            return results
        except (WorkflowUpdateRPCTimeoutOrCancelledError, RPCError) as err:
            if is_unavailable(err):
                raise TemporalUnavailableError(_NO_ANSWER) from err
            if not isinstance(err, RPCError):
                raise  # our own task was cancelled while it waited: not an outage
            # Too many updates in flight on the queue at once, or the update was aborted because
            # the workflow task that carried it failed (the queue was closing or continuing as
            # new as it came: the server refuses that task, "UnhandledCommand"). An enqueue is
            # idempotent by its request id: back off and try again.
            if err.status not in _RETRIED or time.monotonic() > deadline:
                raise
        await asyncio.sleep(random.uniform(0.02, 0.1))  # noqa: S311 (jitter)
        start = _fresh(start)


_RETRIED = (RPCStatusCode.RESOURCE_EXHAUSTED, RPCStatusCode.FAILED_PRECONDITION)


def _fresh(start: WithStartWorkflowOperation[Any, Any]) -> WithStartWorkflowOperation[Any, Any]:
    """A with-start operation is used once; the same one again for the next try."""
    return WithStartWorkflowOperation(
        QUEUE_WORKFLOW_TYPE,
        *start._start_workflow_input.args,
        id=start._start_workflow_input.id,
        task_queue=start._start_workflow_input.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        static_summary=start._start_workflow_input.static_summary,
    )
