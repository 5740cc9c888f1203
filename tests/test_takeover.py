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
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

from activities.scope_ops import adopt_predecessor
from agent_runner.contract import (
    ADOPT_PREDECESSOR,
    SCOPE_WORKFLOW,
    Admission,
    AdmitRequest,
    OnBusy,
    RunPhase,
    RunPolicy,
    RunRequest,
    RunState,
    ScopeLimits,
)
from agent_runner.ids import Scope
from tests.helpers import assert_eventually
from workflows.scope_book import ScopeBook, ScopeState

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


async def _terminated_then_adopted(client: Client, scope_id: str) -> Any:
    """Once the coordinator's workflow task has failed, terminate it as the API does, and ask
    the real ``adopt_predecessor`` what its successor takes over."""
    broken = client.get_workflow_handle(scope_id)  # the newest execution

    async def task_failed() -> None:
        kinds = [event.event_type async for event in broken.fetch_history_events()]
        assert EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED in kinds

    await assert_eventually(task_failed)
    await broken.terminate("its workflow task failed: a new coordinator takes over")

    async def listed() -> None:
        query = f"WorkflowId = '{scope_id}' AND ExecutionStatus = 'Terminated'"
        assert [run async for run in client.list_workflows(query)] != []

    await assert_eventually(listed)
    return await ActivityEnvironment(client=client).run(adopt_predecessor, scope_id)


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
        handed = await _terminated_then_adopted(temporal_client, scope_id)

    assert handed == HANDED
    description = await broken.describe()
    assert description.status == WorkflowExecutionStatus.TERMINATED


STAND_IN_RUN = "StandInRun"
USER = "9b64a3a7-f8e4-4f06-8e57-73b50b042f29"


@workflow.defn(name=STAND_IN_RUN, sandboxed=False)
class StandInRun:
    """A run's workflow: run-a ends DONE at once, run-b runs until it is terminated."""

    @workflow.run
    async def run(self, given: dict[str, Any]) -> dict[str, Any]:
        if given["run_id"] == "run-b":
            await workflow.wait_condition(lambda: False)
        return {"agent_type": "policy-checker", "user_id": USER, "result": "approved", "attempt": 1}


@workflow.defn(name=SCOPE_WORKFLOW, sandboxed=False)
class CoordinatorThatRanItsRuns:
    """Continues as new with the state it was given (run-x on slot 0, which has ended; run-a
    and run-b queued), starts both queued runs itself on slots 0 and 1, sees run-a end, then
    breaks: every workflow task fails from there."""

    @workflow.run
    async def run(self, carried: dict[str, Any] | None = None) -> None:
        if workflow.info().continued_run_id is None:
            workflow.continue_as_new(carried)
        scope_id = workflow.info().workflow_id
        for slot, run_id in enumerate(("run-a", "run-b")):
            child = await workflow.start_child_workflow(
                STAND_IN_RUN,
                {"run_id": run_id, "fence_base": 42 + slot},
                id=f"{scope_id}:slot-{slot}",
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
            )
            if run_id == "run-a":
                await child
        raise RuntimeError("this history no longer replays")


def _handed(scope_id: str, first_execution: str) -> ScopeState:
    """run-x holds slot 0 (its execution ``first_execution``); run-a and run-b wait."""
    book = ScopeBook(Scope(scope_id), ScopeState(ScopeLimits(1, 100)), RunPolicy())
    now = datetime.now(UTC)
    for run_id in ("run-x", "run-a", "run-b"):
        request = AdmitRequest(
            request_id=f"request:{run_id}",
            run=RunRequest("policy-checker", USER),
            on_busy=OnBusy.ENQUEUE,
        )
        answer = book.admit(request, now, lambda run_id=run_id: run_id)
        assert answer.admission in (Admission.STARTED, Admission.QUEUED), answer
    book.started("run-x", first_execution)
    return book.carried()


async def test_a_successor_does_not_run_again_what_a_predecessor_it_cannot_ask_ran_itself(
    temporal_client: Client,
) -> None:
    """Found by the randomized run (seed 17, in the suite): a coordinator whose history no
    longer replayed had been handed a queue, then granted, started and seen to the end three
    of its runs. Its successor took over the queue as it was handed and ran them again. Now
    the predecessor's history says which runs it started, and the successor takes each as it
    ended, or as running on its slot."""
    scope_id = f"takeover-{uuid.uuid4()}"
    task_queue = f"broken-{uuid.uuid4()}"
    async with Worker(
        temporal_client,
        task_queue=task_queue,
        workflows=[CoordinatorThatRanItsRuns, StandInRun],
    ):
        first = await temporal_client.start_workflow(
            STAND_IN_RUN, {"run_id": "run-x"}, id=f"{scope_id}:slot-0", task_queue=task_queue
        )
        await first.result()
        handed = _handed(scope_id, first.result_run_id or "")
        await temporal_client.start_workflow(
            SCOPE_WORKFLOW, handed, id=scope_id, task_queue=task_queue
        )
        carried = await _terminated_then_adopted(temporal_client, scope_id)
        still_running = temporal_client.get_workflow_handle(f"{scope_id}:slot-1")
        running_id = (await still_running.describe()).run_id
        await still_running.terminate("the test is over")

    assert isinstance(carried, ScopeState)
    entries = {entry.run_id: entry for entry in carried.entries}
    assert carried.queue == []
    for run_id in ("run-x", "run-a"):  # run-x: handed on slot 0, which run-a took after it
        ended = entries[run_id]
        assert ended.phase == RunPhase.ENDED
        assert ended.outcome is not None
        assert (ended.outcome.state, ended.outcome.result) == (RunState.DONE, "approved")
    running = entries["run-b"]
    assert (running.phase, running.slot, running.fence_base) == (RunPhase.GRANTED, 1, 43)
    assert running.temporal_run_id == running_id
    assert [(hold.slot, hold.run_id) for hold in carried.slots] == [(1, "run-b")]
