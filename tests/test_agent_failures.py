"""Agents that raise, and workflows started by other systems with bad input.

The worker here runs in the test process so its agents can be swapped: other functions are
registered under the real agent names, and the real activity code (logging, heartbeats,
failure reporting) runs them.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy

from agent_runner.agents import Agent, AgentContext, NoParams, PermanentError
from agent_runner.settings import Settings
from tests.helpers import (
    USER_ID,
    ListHandler,
    app_client,
    in_process_worker,
    make_settings,
    start_run,
    wait_for_state,
)


class Flaky(Agent[NoParams]):
    """A policy checker that fails its first ``failures`` calls, then works."""

    name = "policy-checker"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def run(self, ctx: AgentContext, params: NoParams) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError(f"scanner offline (call {self.calls})")
        await ctx.report_progress(0.5, "checking")
        return "approved"


async def test_agent_that_fails_once_is_retried_and_done_on_attempt_2(
    temporal_client: Client, idle_settings: Settings, idle_api: httpx.AsyncClient
) -> None:
    async with in_process_worker(temporal_client, idle_settings, [Flaky(failures=1)]):
        run_id = await start_run(idle_api)
        body = await wait_for_state(idle_api, run_id, "DONE", "ERROR")

    assert body["state"] == "DONE"
    assert body["attempt"] == 2
    assert body["result"] == "approved"


async def test_agent_that_always_fails_ends_error_with_reason_and_logged_stack(
    temporal_client: Client,
    idle_settings: Settings,
    idle_api: httpx.AsyncClient,
    log_lines: ListHandler,
) -> None:
    flaky = Flaky(failures=idle_settings.agent_max_attempts)
    async with in_process_worker(temporal_client, idle_settings, [flaky]):
        run_id = await start_run(idle_api)
        body = await wait_for_state(idle_api, run_id, "ERROR", "DONE")
        # The service keeps serving: the next run is accepted and completes.
        next_run_id = await start_run(idle_api)
        await wait_for_state(idle_api, next_run_id, "DONE")

    assert body["state"] == "ERROR"
    assert body["error"] == "RuntimeError: scanner offline (call 3)"
    assert body["attempt"] == idle_settings.agent_max_attempts
    assert body["result"] is None
    errors = [line for line in log_lines.events("agent_error") if line["run_id"] == run_id]
    assert [line["attempt"] for line in errors] == [1, 2, 3]
    for line in errors:
        [exception] = line["exception"]
        assert exception["exc_type"] == "RuntimeError"
        assert exception["frames"], "the stack is logged as structured frames"
        assert {"agent_type", "user_id", "run_id", "timestamp", "level"} <= line.keys()


async def admit(client: Client, settings: Settings, request: object) -> Any:
    """What another system sends to start a run: the scope's coordinator's update ``admit``,
    with names and JSON only (no import of ours)."""
    answers = await client.execute_update_with_start_workflow(
        "admit",
        [request],
        start_workflow_operation=WithStartWorkflowOperation(
            "AgentScopeWorkflow",
            id=settings.workflow_id,
            task_queue=settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        ),
        result_type=list,
    )
    return answers[0]


@pytest.mark.parametrize(
    ("run", "reason"),
    [
        ({"agent_type": "Claims Bot!", "user_id": USER_ID}, "Unsupported agent_type"),
        ({"agent_type": "policy-checker", "user_id": "bob"}, "user_id must be a UUID"),
        (
            {"agent_type": "policy-checker", "user_id": USER_ID, "policy": {"max_attempts": 0}},
            "max_attempts",
        ),
        (
            {
                "agent_type": "policy-checker",
                "user_id": USER_ID,
                "policy": {"timeout_seconds": 1e308},
            },
            "timeout_seconds",
        ),
    ],
)
async def test_another_systems_start_with_bad_input_is_refused_with_a_reason(
    temporal_client: Client,
    idle_settings: Settings,
    idle_api: httpx.AsyncClient,
    run: dict[str, Any],
    reason: str,
) -> None:
    answer = await admit(temporal_client, idle_settings, {"request_id": "erp-1", "run": run})

    assert answer["admission"] == "invalid"
    assert reason in answer["reason"]
    assert answer["run_id"] is None


async def test_another_systems_start_whose_params_the_agent_refuses_ends_error_with_why(
    temporal_client: Client, idle_settings: Settings, idle_api: httpx.AsyncClient
) -> None:
    run = {"agent_type": "policy-checker", "user_id": USER_ID, "params": {"x": 1}}
    async with in_process_worker(temporal_client, idle_settings):
        answer = await admit(temporal_client, idle_settings, {"request_id": "erp-2", "run": run})
        body = await wait_for_state(idle_api, answer["run_id"], "ERROR", "DONE")

    assert body["state"] == "ERROR"
    assert "params.x: Extra inputs are not permitted" in body["error"]


async def test_another_systems_start_is_a_run_like_any_other(
    temporal_client: Client, idle_settings: Settings, idle_api: httpx.AsyncClient
) -> None:
    run = {"agent_type": "document-extractor", "user_id": USER_ID}
    async with in_process_worker(temporal_client, idle_settings):
        answer = await admit(temporal_client, idle_settings, {"request_id": "erp-3", "run": run})
        assert answer["admission"] == "started"
        body = await wait_for_state(idle_api, answer["run_id"], "DONE")
        again = await admit(temporal_client, idle_settings, {"request_id": "erp-3", "run": run})

    assert body["agent_type"] == "document-extractor"
    assert body["user_id"] == USER_ID
    assert (again["run_id"], again["replayed"]) == (answer["run_id"], True)


async def test_agent_over_its_timeout_ends_error_with_a_reason_naming_the_timeout(
    temporal_client: Client, temporal_address: str
) -> None:
    settings = make_settings(
        temporal_address,
        task_queue=f"timeout-{uuid.uuid4()}",
        agent_timeout_seconds=1.0,
        agent_max_attempts=2,
        agent_duration_seconds=30.0,
    )
    async for api in app_client(settings):
        async with in_process_worker(temporal_client, settings):
            run_id = await start_run(api)
            body = await wait_for_state(api, run_id, "ERROR", "DONE", timeout=60)

    assert body["state"] == "ERROR"
    assert body["error"] == "TimeoutError: the agent ran longer than its timeout of 1 s"
    assert body["attempt"] == 2


class MissingDocument(Agent[NoParams]):
    name = "document-extractor"

    def __init__(self) -> None:
        self.calls = 0

    async def run(self, ctx: AgentContext, params: NoParams) -> str:
        self.calls += 1
        raise PermanentError("no document named 'claim.pdf'")


async def test_a_permanent_error_ends_the_run_at_its_first_attempt(
    temporal_client: Client, idle_settings: Settings, idle_api: httpx.AsyncClient
) -> None:
    agent = MissingDocument()
    async with in_process_worker(temporal_client, idle_settings, [agent]):
        run_id = await start_run(idle_api, "document-extractor")
        body = await wait_for_state(idle_api, run_id, "ERROR", "DONE")

    assert body["state"] == "ERROR"
    assert body["error"] == "PermanentError: no document named 'claim.pdf'"
    assert body["attempt"] == 1
    assert agent.calls == 1


class OutlivesItsLease(Agent[NoParams]):
    """Its first attempt blocks its event loop past its lease (as a long CPU-bound step does),
    then checks its lease before going on: ``checkpoint()`` raises LeaseLostError, and the
    agent lets it end its work, as agents are told to."""

    name = "policy-checker"

    def __init__(self, block_seconds: float) -> None:
        self.block_seconds = block_seconds

    async def run(self, ctx: AgentContext, params: NoParams) -> str:
        if ctx.attempt == 1:
            time.sleep(self.block_seconds)  # noqa: ASYNC251 (the point: a blocked loop)
            ctx.checkpoint()
        return "approved"


async def test_an_agent_ended_by_its_lost_lease_leaves_no_unretrieved_task_exception(
    temporal_client: Client, temporal_address: str, log_lines: ListHandler
) -> None:
    """Scale issue, finding 7: the worker logged `Task exception was never retrieved ...
    LeaseLostError` (at error level) for each agent that raised LeaseLostError, and its run's
    workflow `_ActivityHandle exception was never retrieved` for each attempt that reported its
    end before failing its activity."""
    settings = make_settings(
        temporal_address,
        task_queue=f"lease-{uuid.uuid4()}",
        agent_heartbeat_timeout_seconds=2.0,
    )
    agent = OutlivesItsLease(block_seconds=2.0)
    with records_of_failed_activities_not_kept():
        async for api in app_client(settings):
            async with in_process_worker(temporal_client, settings, [agent]):
                run_id = await start_run(api)
                body = await wait_for_state(api, run_id, "DONE", "ERROR", timeout=60)
        gc.collect()  # a task dropped with its exception unread says so when it is collected

    assert (body["state"], body["attempt"]) == ("DONE", 2), body
    [lost] = [line for line in log_lines.events("agent_lease_lost") if line["run_id"] == run_id]
    assert lost["attempt"] == 1
    unretrieved = [line for line in log_lines.lines if "never retrieved" in line["event"]]
    assert unretrieved == []


@contextlib.contextmanager
def records_of_failed_activities_not_kept() -> Iterator[None]:
    """The SDK logs a failed activity with its exception, whose traceback holds the attempt's
    frames (and so its agent's task); pytest keeps every record it captures until the test
    ends, and the task with them. Not propagated meanwhile, those records are let go."""
    sdk = logging.getLogger("temporalio.activity")
    dropped = logging.NullHandler()
    sdk.addHandler(dropped)
    sdk.propagate = False
    try:
        yield
    finally:
        sdk.propagate = True
        sdk.removeHandler(dropped)
