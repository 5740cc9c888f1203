"""The Temporal side of the benchmarks: raw starts against :mod:`bench.raw_worker`, the times
the server recorded for executions, and tidying a task queue's open executions."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from agent_runner.contract import CLAIM_ATTEMPT, REPORT_ATTEMPT, RUN_WORKFLOW
from bench.raw_worker import RawAgentWorkflow, RawQueueWorkflow, RawRun


async def start_raw(
    client: Client, task_queue: str, workflow_id: str, seconds: float
) -> WorkflowHandle[RawAgentWorkflow, str]:
    """Start one run on a fixed workflow id, refused while one is open: a singleton with
    Temporal alone."""
    return await client.start_workflow(
        RawAgentWorkflow.run,
        RawRun(seconds),
        id=workflow_id,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
    )


async def execute_raw(client: Client, task_queue: str, workflow_id: str, seconds: float) -> str:
    """Start, then wait for the result."""
    handle = await start_raw(client, task_queue, workflow_id, seconds)
    return await handle.result()


async def raw_start_burst(
    client: Client, task_queue: str, workflow_ids: list[str], seconds: float
) -> list[tuple[bool, float]]:
    """``start_workflow`` once per id, all at once: (accepted, seconds to the answer) each."""

    async def one(workflow_id: str) -> tuple[bool, float]:
        started = time.perf_counter()
        try:
            await start_raw(client, task_queue, workflow_id, seconds)
            accepted = True
        except WorkflowAlreadyStartedError:
            accepted = False
        return accepted, time.perf_counter() - started

    return list(await asyncio.gather(*(one(workflow_id) for workflow_id in workflow_ids)))


async def raw_enqueue(client: Client, task_queue: str, items: list[str]) -> float:
    """Seconds for one update-with-start that creates a fresh :class:`RawQueueWorkflow` and
    puts ``items`` in it (then terminated)."""
    workflow_id = fresh_id("bench-raw-enqueue")
    start = WithStartWorkflowOperation(
        RawQueueWorkflow.run,
        id=workflow_id,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    began = time.perf_counter()
    await client.execute_update_with_start_workflow(
        RawQueueWorkflow.enqueue, items, start_workflow_operation=start
    )
    seconds = time.perf_counter() - began
    await client.get_workflow_handle(workflow_id).terminate("benchmark cleanup")
    return seconds


def fresh_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4()}"


@dataclass(frozen=True)
class Execution:
    """When the server says an execution, and the agent activity in it, started and ended."""

    started: datetime
    closed: datetime
    agent_started: datetime
    agent_ended: datetime


async def execution_times(client: Client, workflow_id: str, run_id: str) -> Execution:
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    description = await handle.describe()
    assert description.close_time is not None, f"{workflow_id} {run_id} is still open"
    agent_started = agent_ended = None
    async for event in handle.fetch_history_events():
        at = event.event_time.ToDatetime(tzinfo=UTC)
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            agent_started = agent_started or at
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            agent_ended = at
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            # Ours: an agent works from its attempt's claim to its report (the activity itself
            # completes asynchronously, after the report, or never).
            name = event.workflow_execution_update_accepted_event_attributes.accepted_request
            if name.input.name == CLAIM_ATTEMPT.name:
                agent_started = agent_started or at
            elif name.input.name == REPORT_ATTEMPT.name:
                agent_ended = at
    assert agent_started is not None, f"{workflow_id} {run_id}: no agent started"
    assert agent_ended is not None, f"{workflow_id} {run_id}: no agent ended"
    return Execution(
        description.start_time,
        description.close_time,
        agent_started,
        agent_ended,
    )


def _open_on(task_queue: str) -> str:
    """The runs open on ``task_queue`` (not our coordinators and settings record, which stay)."""
    return (
        f'TaskQueue = "{task_queue}" AND ExecutionStatus = "Running" AND '
        f'WorkflowType IN ("{RUN_WORKFLOW}", "RawAgentWorkflow")'
    )


async def wait_drained(client: Client, task_queue: str, timeout: float = 300.0) -> None:
    """Until no run on ``task_queue`` is open (the runs a burst started have ended)."""
    deadline = time.monotonic() + timeout
    while (await client.count_workflows(_open_on(task_queue))).count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"executions on {task_queue} still open after {timeout:g} s")
        await asyncio.sleep(0.5)


# The legs of one run, in order: when the client asked, when the execution started, when its
# agent started and ended (ours: claim and report; raw: the activity), when the execution
# closed, when the client had the result.
LEGS = ("admitted", "agent_started", "agent_ended", "closed", "answered")


async def legs(
    client: Client, workflow_id: str, run_id: str, asked: float, answered: float
) -> dict[str, float]:
    """Seconds each leg of a run took: from the client's ask (``asked``, epoch seconds) to its
    execution's start (``admitted``), to its agent's start and end, to the execution's close,
    to the client's answer (``answered``). The server and the client share this machine's
    clock."""
    times = await execution_times(client, workflow_id, run_id)
    marks = [
        asked,
        times.started.timestamp(),
        times.agent_started.timestamp(),
        times.agent_ended.timestamp(),
        times.closed.timestamp(),
        answered,
    ]
    return {name: marks[index + 1] - marks[index] for index, name in enumerate(LEGS)}
