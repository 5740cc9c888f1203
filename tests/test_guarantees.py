"""One agent at a time against every client and every fault, a cancel that cancels, nothing
that holds the singleton forever.

Real processes with the default settings (heartbeat timeout 10 s, 3 attempts, first retry after
1 s) and 5 s agents: a Temporal dev server, one API and two workers, paused (SIGSTOP),
resumed and killed by pid; terminates and bad starts come from the real `temporal` CLI. Whether
two agents overlapped is read from the agents' own log lines (tests/spans.py).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from agent_runner.models import RunPolicy
from temporalio.client import Client

from agent_runner.runs import start_agent_run
from devtools.processes import temporal_cli
from tests.helpers import USER_ID, assert_eventually, start_run
from tests.measured import record
from tests.spans import Span, overlapping
from tests.stack import Stack

pytestmark = pytest.mark.reliability

AGENT_SECONDS = 5.0
DEFAULTS = RunPolicy()
STUCK_AFTER_SECONDS = 3.0
WORKFLOW_ID = "agent-runner"


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    stack = Stack(
        tmp_path_factory.mktemp("guarantees"),
        {
            "task_queue": "guarantees",
            "workflow_id": WORKFLOW_ID,
            "agent_duration_seconds": AGENT_SECONDS,
            "agent_max_attempts": DEFAULTS.max_attempts,
            "agent_heartbeat_timeout_seconds": DEFAULTS.heartbeat_timeout_seconds,
            "agent_retry_initial_interval_seconds": DEFAULTS.retry_initial_interval_seconds,
            # The bound for a run that can never progress; 10 s by default, 3 s to keep it short.
            "run_stuck_after_seconds": STUCK_AFTER_SECONDS,
            "run_worker_wait_seconds": STUCK_AFTER_SECONDS,
        },
    )
    await stack.start(apis=1, workers=2)
    yield stack
    stack.stop_all()


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the stack's API; afterwards, pass or fail, the stack is left as the next test
    wants it: both workers running, no run open."""
    async with httpx.AsyncClient(base_url=stack.api_url(0), timeout=30.0) as client:
        yield client
        for index, worker in enumerate(stack.workers):
            if worker is None or not worker.running():
                stack.start_worker(index)
            else:
                stack.resume_worker(index)
        current = await client.get("/agents/current")
        if current.status_code == 200:
            await client.post(f"/agents/runs/{current.json()['run_id']}/cancel")
        await assert_eventually(lambda: _idle(client), timeout=60)


async def _idle(client: httpx.AsyncClient) -> None:
    assert (await client.get("/agents/current")).status_code == 404


async def status(http: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    response = await http.get(f"/agents/status/{run_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def final(http: httpx.AsyncClient, run_id: str, timeout: float = 90.0) -> dict[str, Any]:
    async def ended() -> dict[str, Any]:
        body = await status(http, run_id)
        assert body["state"] in ("DONE", "ERROR"), body
        return body

    return await assert_eventually(ended, timeout=timeout, interval=0.2)


def log_lines(stack: Stack, event: str, run_id: str) -> list[dict[str, Any]]:
    return [
        line
        for worker in stack.every_worker
        for line in worker.log.events(event)
        if line.get("run_id") == run_id
    ]


async def agent_working(
    stack: Stack, run_id: str, attempt: int = 1, on: int | None = None, timeout: float = 60
) -> int:
    """Wait until an attempt (``attempt`` or, with ``on``, any from ``attempt`` on) of the run's
    agent has started (on worker ``on``); the index of its worker."""

    def matches(line: dict[str, Any]) -> bool:
        if line.get("run_id") != run_id:
            return False
        return line.get("attempt") == attempt if on is None else line["attempt"] >= attempt

    async def started() -> int:
        for index, worker in enumerate(stack.workers):
            if on not in (None, index) or worker is None:
                continue
            if any(matches(line) for line in worker.log.events("agent_start")):
                return index
        raise AssertionError(f"attempt {attempt} of {run_id} has not started")

    return await assert_eventually(started, timeout=timeout, interval=0.05)


async def start_with_many_attempts(stack: Stack) -> str:
    """A run started through the Python API with ten attempts. A paused worker's polls stay open
    on the server for a while, so a retry can be handed to the paused worker and time out
    again before one reaches a live worker: this run has attempts to spare for that."""
    client = await Client.connect(stack.server.address)
    settings = stack.settings()
    return await start_agent_run(
        client,
        "policy-checker",
        USER_ID,
        target=settings.run_target(),
        policy=replace(settings.run_policy(), max_attempts=10),
    )


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(temporal_cli()), *args, "--address", stack.server.address],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def spans_of(stack: Stack, *run_ids: str) -> list[Span]:
    return [span for span in stack.spans() if span.run_id in run_ids]


def seconds(later: datetime, earlier: datetime) -> float:
    return round((later - earlier).total_seconds(), 2)


# --- 1. Two agents at once ---------------------------------------------------------------------


async def test_terminated_run_frees_the_slot_only_once_its_agent_has_stopped(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    first = await start_run(http)
    await agent_working(stack, first)
    await asyncio.sleep(1.0)  # one second into its agent, as the finding describes

    terminated_at = datetime.now(UTC)
    result = cli(stack, "workflow", "terminate", "--workflow-id", WORKFLOW_ID, "--run-id", first)
    assert result.returncode == 0, result.stderr
    second = await start_run(http)  # the id is free at once: accepted
    assert (await final(http, second))["state"] == "DONE"

    spans = spans_of(stack, first, second)
    assert overlapping(spans) == [], spans
    assert not log_lines(stack, "agent_complete", first), "the terminated run's agent went on"
    [zombie] = [span for span in spans if span.run_id == first]
    [successor] = [span for span in spans if span.run_id == second]
    assert zombie.ended_by == "agent_lease_lost"
    record(
        "08_terminate",
        "`temporal workflow terminate` 1 s into a 5 s agent, next run started at once",
        "next run 202 at once; its agent started only after the terminated one stopped; "
        "no overlap; the terminated agent logged agent_lease_lost, never agent_complete",
        seconds_terminate_to_agent_stopped=seconds(zombie.end, terminated_at),
        seconds_between_agents=seconds(successor.start, zombie.end),
    )


async def test_paused_worker_resumed_after_its_attempt_moved_on_never_completes(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    run_id = await start_with_many_attempts(stack)
    paused = await agent_working(stack, run_id)
    stack.pause_worker(paused)
    paused_at = datetime.now(UTC)

    live = 1 - paused
    await agent_working(stack, run_id, attempt=2, on=live, timeout=120)
    stack.resume_worker(paused)  # the paused attempt wakes up while a retry works elsewhere
    body = await final(http, run_id, timeout=120)
    await assert_eventually(lambda: _lease_lost_logged(stack, run_id), timeout=30)

    assert body["state"] == "DONE"
    assert body["attempt"] >= 2
    spans = spans_of(stack, run_id)
    assert overlapping(spans) == [], spans
    assert [line["attempt"] for line in log_lines(stack, "agent_complete", run_id)] == [
        body["attempt"]
    ]
    zombie, retry = spans[0], spans[-1]
    record(
        "09_paused_worker",
        "SIGSTOP the worker running a 5 s agent past the 10 s heartbeat timeout, SIGCONT it "
        "while the retry works",
        "retry on the other worker (attempt 2, DONE); the woken attempt logged "
        "agent_lease_lost, never agent_complete; no overlap",
        seconds_pause_to_retry_start=seconds(retry.start, paused_at),
        seconds_between_agents=seconds(retry.start, zombie.end),
    )


async def _lease_lost_logged(stack: Stack, run_id: str) -> None:
    assert log_lines(stack, "agent_lease_lost", run_id)


async def test_paused_worker_then_terminated_run_holds_the_next_agent_back(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    first = await start_run(http)
    paused = await agent_working(stack, first)
    stack.pause_worker(paused)
    result = cli(stack, "workflow", "terminate", "--workflow-id", WORKFLOW_ID, "--run-id", first)
    assert result.returncode == 0, result.stderr

    second = await start_with_many_attempts(stack)
    successor = await agent_working(stack, second, on=1 - paused, timeout=120)
    stack.resume_worker(paused)
    assert (await final(http, second, timeout=120))["state"] == "DONE"
    await assert_eventually(lambda: _lease_lost_logged(stack, first), timeout=30)

    assert successor != paused
    spans = spans_of(stack, first, second)
    assert overlapping(spans) == [], spans
    assert not log_lines(stack, "agent_complete", first)
    [zombie] = [span for span in spans if span.run_id == first]
    [next_agent] = [span for span in spans if span.run_id == second]
    record(
        "10_paused_then_terminated",
        "worker paused mid-agent, its run terminated, next run started at once",
        "the next agent waited for the paused attempt's lease (it cannot say it stopped); "
        "woken, that attempt logged agent_lease_lost; no overlap",
        seconds_between_agents=seconds(next_agent.start, zombie.end),
    )


# --- 2. A cancel that cancels --------------------------------------------------------------------


@pytest.mark.parametrize("into_agent", [0.3, 4.0])
async def test_cancel_reaches_the_agent_with_the_default_heartbeat_timeout(
    stack: Stack, http: httpx.AsyncClient, into_agent: float
) -> None:
    run_id = await start_run(http)
    await agent_working(stack, run_id)
    await asyncio.sleep(into_agent)

    asked = time.monotonic()
    response = await http.post(f"/agents/runs/{run_id}/cancel")
    answered = time.monotonic() - asked
    body = await final(http, run_id)

    assert response.status_code in (200, 202), response.text
    assert body["state"] == "ERROR", body
    assert body["error"] == "cancelled"
    # Failed before the fix: 0, as if no attempt had run.
    assert body["attempt"] == 1, body
    assert log_lines(stack, "agent_cancelled", run_id)
    assert not log_lines(stack, "agent_complete", run_id)
    record(
        f"11_cancel_{into_agent:g}s_in",
        f"POST cancel {into_agent:g} s into a 5 s agent, heartbeat timeout 10 s",
        "the agent stopped (agent_cancelled), the run ended ERROR 'cancelled', never DONE",
        seconds_cancel_to_answer=round(answered, 2),
        answer=response.status_code,
    )


async def test_cancel_of_a_pending_run_while_the_workers_are_paused(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    for index in range(len(stack.workers)):
        stack.pause_worker(index)
    run_id = await start_run(http)
    assert (await status(http, run_id))["state"] == "PENDING"

    response = await http.post(f"/agents/runs/{run_id}/cancel")
    for index in range(len(stack.workers)):
        stack.resume_worker(index)
    body = await final(http, run_id)

    assert response.status_code == 200, response.text
    assert response.json()["state"] == "ERROR"
    assert body["error"] == "cancelled"
    next_run = await start_run(http)
    assert (await final(http, next_run))["state"] == "DONE"
    assert not log_lines(stack, "agent_start", run_id)
    record(
        "12_cancel_pending",
        "POST cancel while PENDING, both workers paused",
        "ended ERROR 'cancelled' at once (no agent was working); its agent never started "
        "once the workers resumed; the next run ran",
    )


async def test_cancel_after_the_agent_finished_is_not_reported_as_a_cancel(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    run_id = await start_run(http)
    await final(http, run_id)

    response = await http.post(f"/agents/runs/{run_id}/cancel")

    assert response.status_code == 409
    assert (await status(http, run_id))["state"] == "DONE"


# --- 3. Nothing holds the singleton forever ---------------------------------------------------

GOOD_INPUT = json.dumps({"agent_type": "policy-checker", "user_id": USER_ID})
BAD_STARTS = {
    "two inputs": (["--input", GOOD_INPUT, "--input", GOOD_INPUT], "takes one input"),
    "another type": (["--type", "ClaimsWorkflow"], "Unsupported workflow type"),
    "timeout 1e308": (
        ["--input", GOOD_INPUT[:-1] + ', "policy": {"timeout_seconds": 1e308}}'],
        "policy.timeout_seconds",
    ),
    "2^40 attempts": (
        ["--input", GOOD_INPUT[:-1] + ', "policy": {"max_attempts": 1099511627776}}'],
        "policy.max_attempts",
    ),
    "undecodable payload": (
        ["--input", '"x"', "--input-meta", "encoding=binary/unheard-of"],
        "cannot decode it",
    ),
    "a task queue no worker polls": (
        ["--input", GOOD_INPUT, "--task-queue", "nobody-polls-this"],
        "no worker polls",
    ),
    # Failed before the fix: PENDING (waiting for a worker) for ever, every API start 409.
    "an agent no worker has": (
        ["--input", json.dumps({"agent_type": "nope", "user_id": USER_ID})],
        "no worker that has the 'nope' agent polled its task queue",
    ),
}


def start_from_cli(stack: Stack, extra: list[str]) -> str:
    args = ["workflow", "start", "--workflow-id", WORKFLOW_ID, "--fail-existing", "-o", "json"]
    if "--type" not in extra:
        args += ["--type", "AgentRunWorkflow"]
    if "--task-queue" not in extra:
        args += ["--task-queue", "guarantees"]
    if "--input" not in extra:
        args += ["--input", GOOD_INPUT]
    result = cli(stack, *args, *extra)
    assert result.returncode == 0, result.stderr
    run_id: str = json.loads(result.stdout)["runId"]
    return run_id


@pytest.mark.parametrize("case", BAD_STARTS)
async def test_a_bad_start_from_the_cli_ends_error_with_the_reason(
    stack: Stack, http: httpx.AsyncClient, case: str
) -> None:
    extra, reason = BAD_STARTS[case]
    started = time.monotonic()
    run_id = start_from_cli(stack, extra)

    body = await final(http, run_id, timeout=60)
    ended_after = time.monotonic() - started
    next_run = await start_run(http)

    assert body["state"] == "ERROR"
    assert reason in body["error"], body
    assert len(body["error"]) < 600
    await final(http, next_run)
    record(
        f"13_bad_start_{case.replace(' ', '_')}",
        f"`temporal workflow start` on the singleton's id with {case}",
        "ended ERROR with the reason; the next API start was accepted",
        seconds_start_to_error=round(ended_after, 1),
    )


async def test_the_api_cancels_a_run_that_can_never_progress(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    run_id = start_from_cli(stack, ["--input", GOOD_INPUT, "--task-queue", "nobody-polls-this"])

    response = await http.post(f"/agents/runs/{run_id}/cancel")

    assert response.status_code == 200, response.text
    assert (await status(http, run_id))["error"] == "cancelled"
    next_run = await start_run(http)
    await final(http, next_run)
