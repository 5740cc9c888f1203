"""A successor takes over the queue of a coordinator whose history no longer replays.

Found by the randomized run (seed 91807): a coordinator continued as new 2 s after the server
restarted; the server handed its worker an admit it had already accepted, the worker accepted
it again and the task failed, and on replay the history no longer matched the code (an engine
fault, not ours). The API ended it after five failed tasks; its successor could not ask it what
it had been handed (the server refuses a query of an execution whose last task failed) and
started afresh: 32 queued runs and their keys were lost.

The broken coordinator here is a stand-in served by an in-process worker on a task queue of
its own: it hands on, or adopts, a state, then fails every workflow task after, as that one
did. What is under test is the real ``adopt_predecessor`` against the real server.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

from activities.scope_ops import adopt_predecessor
from agent_runner.contract import ADOPT_PREDECESSOR, SCOPE_WORKFLOW
from tests.helpers import assert_eventually

HANDED = {"queue": ["run-1", "run-2"], "next_seq": 7}


@workflow.defn(name=SCOPE_WORKFLOW, sandboxed=False)
class BrokenCoordinator:
    """Hands on (continues as new with its input) or adopts, then breaks: every workflow task
    fails from the first (``never ran``) or from the second."""

    @workflow.run
    async def run(self, carried: dict[str, Any] | None = None) -> None:
        began, broke = workflow.memo_value("how", type_hint=list[str])
        if workflow.info().continued_run_id is None:
            if began == "continued as new":
                workflow.continue_as_new(carried, memo={"how": [began, broke]})
            await workflow.execute_activity(
                ADOPT_PREDECESSOR, "scope", start_to_close_timeout=timedelta(seconds=10)
            )
        elif broke == "after a task":
            await workflow.sleep(0.1)
        raise RuntimeError("this history no longer replays")  # every task fails from here


@activity.defn(name=ADOPT_PREDECESSOR)
async def adopted(scope_id: str) -> dict[str, Any]:
    return HANDED


@pytest.mark.parametrize(
    ("began", "broke"),
    [
        ("continued as new", "after a task"),
        # Its first task failed: the server says it never ran, and the one before it (which
        # continued as new, so it "closed by itself") handed it everything.
        ("continued as new", "never ran"),
        ("afresh", "after a task"),
    ],
)
async def test_a_successor_takes_over_from_a_coordinator_whose_history_no_longer_replays(
    temporal_client: Client, began: str, broke: str
) -> None:
    scope_id = f"takeover-{uuid.uuid4()}"
    task_queue = f"broken-{uuid.uuid4()}"
    async with Worker(
        temporal_client, task_queue=task_queue, workflows=[BrokenCoordinator], activities=[adopted]
    ):
        await temporal_client.start_workflow(
            SCOPE_WORKFLOW,
            HANDED if began == "continued as new" else None,
            id=scope_id,
            task_queue=task_queue,
            memo={"how": [began, broke]},
        )
        broken = temporal_client.get_workflow_handle(scope_id)  # the newest execution

        async def task_failed() -> None:
            kinds = [event.event_type async for event in broken.fetch_history_events()]
            assert EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED in kinds

        await assert_eventually(task_failed)
        await broken.terminate("its workflow task failed: a new coordinator takes over")

        async def listed() -> None:
            query = f"WorkflowId = '{scope_id}' AND ExecutionStatus = 'Terminated'"
            assert [run async for run in temporal_client.list_workflows(query)] != []

        await assert_eventually(listed)
        handed = await ActivityEnvironment(client=temporal_client).run(adopt_predecessor, scope_id)

    assert handed == HANDED
    description = await broken.describe()
    assert description.status == WorkflowExecutionStatus.TERMINATED
