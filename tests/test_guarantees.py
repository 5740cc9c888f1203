"""At most N agents at once whatever any client sends and whatever fails; runs that end once, in
order; nothing that holds a slot for ever.

Real processes: a Temporal dev server, one API and two workers, each worker talking to the
server through a proxy the test can cut (a partition). Terminates, forged completions, options
changes, pauses and starts on odd ids come from the real `temporal` CLI, as another system
would send them. Whether two agents overlapped is read from the agents' own log lines
(tests/spans.py); the module's last tests check that over everything it did.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from devtools.processes import temporal_cli
from tests.helpers import USER_ID, LoggedProcess, assert_eventually, start_run
from tests.spans import END_EVENTS, Span, overlapping
from tests.stack import Stack

pytestmark = pytest.mark.reliability

AGENT_SECONDS = 3.0
HEARTBEAT_SECONDS = 4.0
WORKFLOW_ID = "agent-runner"
SLOT = f"{WORKFLOW_ID}:slot-0"
TASK_QUEUE = "guarantees"


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    stack = Stack(
        tmp_path_factory.mktemp("guarantees"),
        {
            "task_queue": TASK_QUEUE,
            "workflow_id": WORKFLOW_ID,
            "agent_duration_seconds": AGENT_SECONDS,
            "agent_max_attempts": 3,
            "agent_heartbeat_timeout_seconds": HEARTBEAT_SECONDS,
            "agent_retry_initial_interval_seconds": 0.2,
        },
    )
    await stack.start(apis=1, workers=2)
    yield stack
    await stack.stop_all()


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the stack's API; afterwards, pass or fail, the stack is left as the next test
    wants it: server and both workers up and reachable, no run open or waiting."""
    async with httpx.AsyncClient(base_url=stack.api_url(0), timeout=30.0) as client:
        yield client
        if stack.server.process is not None:
            stack.server.process.send_signal(signal.SIGCONT)
        await stack.heal()
        queue = await client.get("/agents/queue")
        if queue.status_code == 200:
            for run in queue.json()["queued"] + queue.json()["running"]:
                await client.post(f"/agents/runs/{run['run_id']}/cancel")
        await assert_eventually(lambda: _idle(client), timeout=90)
        # After a partition, tasks handed to the stale polls of the worker that was cut off are
        # lost until they time out: the next test starts once a run goes through again.
        probe = await start_run(client)
        await final(client, probe)


async def _idle(client: httpx.AsyncClient) -> None:
    queue = (await client.get("/agents/queue")).json()
    assert queue == {"running": [], "queued": [], "next_page_token": None}, queue


async def status(http: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    response = await http.get(f"/agents/status/{run_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def final(http: httpx.AsyncClient, run_id: str, timeout: float = 120.0) -> dict[str, Any]:
    async def ended() -> dict[str, Any]:
        body = await status(http, run_id)
        assert body["state"] in ("DONE", "ERROR"), body
        return body

    return await assert_eventually(ended, timeout=timeout, interval=0.2)


async def enqueue(http: httpx.AsyncClient) -> str:
    """Queue a run, sent again after a 503 (a start refused then was not made)."""
    return await start_run(http, on_busy="enqueue")


def lines(stack: Stack, event: str, run_id: str) -> list[dict[str, Any]]:
    return [
        line
        for worker in stack.every_worker
        for line in worker.log.events(event)
        if line.get("run_id") == run_id
    ]


async def agent_working(stack: Stack, run_id: str, attempt: int = 1, timeout: float = 60) -> int:
    """Wait until an attempt of the run's agent, ``attempt`` or a later one, has started (a
    retry handed to a worker that is cut off or paused times out, and the next goes elsewhere);
    its worker's index."""

    async def started() -> int:
        for index, worker in enumerate(stack.workers):
            if worker is None:
                continue
            for line in worker.log.events("agent_start"):
                if line.get("run_id") == run_id and line.get("attempt", 0) >= attempt:
                    return index
        raise AssertionError(f"attempt {attempt} of {run_id} has not started")

    return await assert_eventually(started, timeout=timeout, interval=0.05)


async def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """The real `temporal` CLI, in a thread: this event loop relays the workers' proxies, and
    a command that needs a worker (an update) must not stop it."""
    return await asyncio.to_thread(
        subprocess.run,
        [str(temporal_cli()), *args, "--address", stack.server.address],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def completed_by(stack: Stack, run_id: str, attempt: int) -> None:
    """The run's one agent_complete line, of ``attempt``: the run has the result a moment before
    its attempt hears so and writes the line, so it is waited for."""

    async def logged() -> None:
        found = [line["attempt"] for line in lines(stack, "agent_complete", run_id)]
        assert found == [attempt], found

    await assert_eventually(logged, timeout=30)


def spans_of(stack: Stack, *run_ids: str) -> list[Span]:
    return [span for span in stack.spans() if span.run_id in run_ids]


async def slot_execution(http: httpx.AsyncClient, run_id: str) -> tuple[str, str]:
    """The run's execution on its slot: workflow id and Temporal run id."""

    async def started() -> tuple[str, str]:
        body = await status(http, run_id)
        assert body["temporal_run_id"], body
        assert body["workflow_id"] != WORKFLOW_ID, body
        return body["workflow_id"], body["temporal_run_id"]

    return await assert_eventually(started, timeout=30)


# --- a run closed, or its attempt given up, while its agent may work --------------------------


async def test_a_terminated_runs_agent_stops_before_the_next_agent_starts(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    first = await start_run(http)
    await agent_working(stack, first)
    second = await enqueue(http)
    await asyncio.sleep(1.0)
    workflow_id, run = await slot_execution(http, first)

    result = await cli(
        stack, "workflow", "terminate", "--workflow-id", workflow_id, "--run-id", run
    )

    assert result.returncode == 0, result.stderr
    assert (await final(http, second))["state"] == "DONE"
    assert (await final(http, first))["error"].startswith("terminated")
    spans = spans_of(stack, first, second)
    assert overlapping(spans) == [], spans
    assert not lines(stack, "agent_complete", first), "the terminated run's agent went on"


async def test_forged_messages_to_a_run_change_nothing_but_its_pace(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    """A claim, a report and a progress report sent by another client: the report is refused (it
    has no claim's key), the claim only makes the run wait one lease more before it ends."""
    run_id = await start_run(http)
    await agent_working(stack, run_id)
    workflow_id, run = await slot_execution(http, run_id)

    async def update(name: str, value: object) -> subprocess.CompletedProcess[str]:
        return await cli(
            stack,
            "workflow",
            "update",
            "execute",
            "--workflow-id",
            workflow_id,
            "--run-id",
            run,
            "--name",
            name,
            "--input",
            json.dumps(value),
        )

    # The claim first: it holds the run open one lease more, so the report reaches a live run.
    claim = await update("claim_attempt", {"attempt": 1, "commitment": "a" * 64})
    report = await update(
        "report_attempt", {"attempt": 1, "stop_key": "0" * 64, "result": "forged"}
    )
    signalled = await cli(
        stack,
        "workflow",
        "signal",
        "--workflow-id",
        workflow_id,
        "--name",
        "progress",
        "--input",
        '{"attempt": 1, "fraction": 0.9, "message": "forged"}',
    )
    body = await final(http, run_id)

    assert report.returncode != 0, report.stdout
    assert claim.returncode == 0, claim.stderr
    assert signalled.returncode == 0, signalled.stderr
    assert body["state"] == "DONE"
    assert body["result"] != "forged"
    assert overlapping(spans_of(stack, run_id)) == []


async def zombie_stopped(stack: Stack, run_id: str, worker: int) -> None:
    """Wait until the attempt of ``run_id`` on ``worker`` (cut off, or paused and resumed) has
    logged that it stopped: it does so by itself once its lease runs out."""
    log = stack.workers[worker]
    assert log is not None

    async def stopped() -> None:
        assert [
            line
            for line in log.log.read()
            if line.get("run_id") == run_id and line.get("event") in END_EVENTS
        ]

    await assert_eventually(stopped, timeout=60)


async def test_a_worker_cut_off_mid_agent_never_overlaps_the_retry(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    run_id = await start_run(http)
    cut = await agent_working(stack, run_id)

    stack.cut_worker(cut)
    await zombie_stopped(stack, run_id, cut)
    stack.heal_worker(cut)
    body = await final(http, run_id)

    assert body["state"] == "DONE"
    await completed_by(stack, run_id, body["attempt"])
    spans = spans_of(stack, run_id)
    assert overlapping(spans) == [], spans


async def test_a_paused_worker_resumed_never_completes_its_run_twice(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    """Finding 3 of the exactly-once issue: a queued run's attempt 1 ran again after a worker
    paused past its heartbeat timeout was resumed."""
    first = await start_run(http)
    behind = [await enqueue(http) for _ in range(2)]
    paused = await agent_working(stack, first)

    stack.pause_worker(paused)
    await agent_working(stack, first, attempt=2, timeout=90)
    stack.resume_worker(paused)

    for run_id in (first, *behind):
        body = await final(http, run_id)
        assert body["state"] == "DONE"
        await completed_by(stack, run_id, body["attempt"])
    spans = spans_of(stack, first, *behind)
    assert overlapping(spans) == [], spans
    starts = [min(span.start for span in spans if span.run_id == run) for run in behind]
    assert starts == sorted(starts), "the queue kept its order"


async def test_a_server_frozen_right_after_the_agent_decided_gives_one_completion(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    """Finding 6: an attempt whose last lease check timed out logged agent_complete, its result
    was lost, and attempt 2 decided otherwise. The result now goes to the run first: an attempt
    logs agent_complete only once its run has it. Frozen as the report was sent (CI, one core
    busy), the run gave the attempt up, which wrote its end line after the report's refusal
    settled, stopped_at then: its agent stopped before the freeze, and the line now says so."""
    run_id = await start_run(http)

    async def decided() -> None:
        assert lines(stack, "policy_decision", run_id)

    await assert_eventually(decided, timeout=60, interval=0.01)
    assert stack.server.process is not None
    stack.server.process.send_signal(signal.SIGSTOP)
    await asyncio.sleep(HEARTBEAT_SECONDS + 1)
    stack.server.process.send_signal(signal.SIGCONT)
    body = await final(http, run_id)

    assert body["state"] == "DONE"

    async def completed_once() -> None:
        completions = lines(stack, "agent_complete", run_id)
        assert [line["result"] for line in completions] == [body["result"]]

    # The run has the result a moment before its attempt hears so and writes agent_complete.
    await assert_eventually(completed_once, timeout=30)

    # An attempt whose report met the frozen server may be given up on by its run and wait
    # for its report's refusal to settle before it writes its end line (agent_lease_lost,
    # stopped_at its agent's stop): every attempt says when it stopped, and none overlaps.
    async def all_ended() -> list[Span]:
        spans = spans_of(stack, run_id)
        assert all(span.ended_by in END_EVENTS for span in spans), spans
        return spans

    spans = await assert_eventually(all_ended, timeout=90)
    assert overlapping(spans) == [], spans


# --- what another system sends ------------------------------------------------------------------


async def test_a_forged_activity_completion_is_not_a_result_and_shortens_no_wait(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    """Finding 4 of the trust issue: a forged `temporal activity complete` closed the run and
    the next agent started before the old one stopped."""
    run_id = await start_run(http)
    working = await agent_working(stack, run_id)
    after = await enqueue(http)
    workflow_id, run = await slot_execution(http, run_id)
    stack.cut_worker(working)

    forged = await cli(
        stack,
        "activity",
        "complete",
        "--activity-id",
        "attempt-1",
        "--workflow-id",
        workflow_id,
        "--run-id",
        run,
        "--result",
        '"forged"',
    )
    assert forged.returncode == 0, forged.stderr
    await zombie_stopped(stack, run_id, working)
    stack.heal_worker(working)
    body = await final(http, run_id)

    assert body["state"] == "DONE"
    assert body["result"] != "forged"
    assert body["attempt"] >= 2
    assert (await final(http, after))["state"] == "DONE"
    spans = spans_of(stack, run_id, after)
    assert overlapping(spans) == [], spans


async def test_a_shorter_heartbeat_timeout_set_from_outside_shortens_no_lease(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    """Finding 3 of the trust issue: `temporal activity update-options --heartbeat-timeout 1s`
    and a worker cut off: the server started attempt 2 while attempt 1 held its lease."""
    run_id = await start_run(http)
    working = await agent_working(stack, run_id)
    workflow_id, run = await slot_execution(http, run_id)

    changed = await cli(
        stack,
        "activity",
        "update-options",
        "--activity-id",
        "attempt-1",
        "--workflow-id",
        workflow_id,
        "--run-id",
        run,
        "--heartbeat-timeout",
        "1s",
    )
    assert changed.returncode == 0, changed.stderr
    stack.cut_worker(working)
    await zombie_stopped(stack, run_id, working)
    stack.heal_worker(working)
    body = await final(http, run_id)

    assert body["state"] == "DONE"
    spans = spans_of(stack, run_id)
    assert overlapping(spans) == [], spans


async def test_a_paused_activity_holds_its_slot_no_longer_than_its_policy_allows(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    """Finding 7 of the trust issue: `temporal activity pause` held the slot with no limit."""
    run_id = await start_run(http)
    await agent_working(stack, run_id)
    workflow_id, run = await slot_execution(http, run_id)

    paused = await cli(
        stack,
        "activity",
        "pause",
        "--activity-id",
        "attempt-1",
        "--workflow-id",
        workflow_id,
        "--run-id",
        run,
    )
    assert paused.returncode == 0, paused.stderr
    body = await final(http, run_id)

    assert body["state"] == "DONE"
    assert body["attempt"] >= 2
    await completed_by(stack, run_id, body["attempt"])
    assert overlapping(spans_of(stack, run_id)) == []


async def test_a_paused_attempt_cut_off_from_its_run_is_told_once_the_server_is_reached(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    """Found with three test processes on 2 cores with one busy: the server holds back the
    failure of a paused attempt, so its run learns of the end only from the attempt's own word,
    which was one try with a 2 s budget. That try went unanswered and the run waited out its
    attempt's deadline (ten minutes by default). Here the try cannot be answered: the worker is
    cut off when the attempt is paused, and healed only after that budget."""
    run_id = await start_run(http)
    cut = await agent_working(stack, run_id)
    workflow_id, run = await slot_execution(http, run_id)

    stack.cut_worker(cut)
    paused = await cli(
        stack, "activity", "pause", "--activity-id", "attempt-1",
        "--workflow-id", workflow_id, "--run-id", run,
    )  # fmt: skip
    assert paused.returncode == 0, paused.stderr
    await zombie_stopped(stack, run_id, cut)  # its lease ran out: it can tell no one
    await asyncio.sleep(5.0)  # longer than the one try of before
    stack.heal_worker(cut)
    body = await final(http, run_id)

    assert body["state"] == "DONE"
    assert body["attempt"] >= 2
    await completed_by(stack, run_id, body["attempt"])
    assert overlapping(spans_of(stack, run_id)) == []


ODD_STARTS = {
    "a slot id": (["--type", "AgentRunWorkflow", "--workflow-id", SLOT], "coordinator"),
    "a slot beyond N": (
        ["--type", "AgentRunWorkflow", "--workflow-id", f"{WORKFLOW_ID}:slot-99"],
        "coordinator",
    ),
    "another id": (["--type", "AgentRunWorkflow", "--workflow-id", "zzz-other"], "slot id"),
    "a user's slot while the scope is global": (
        [
            "--type",
            "AgentRunWorkflow",
            "--workflow-id",
            f"{WORKFLOW_ID}:user:{USER_ID}:slot-0",
        ],
        "coordinator",
    ),
    "a coordinator on a slot id": (
        ["--type", "AgentScopeWorkflow", "--workflow-id", f"{WORKFLOW_ID}:slot-1"],
        "not a scope's id",
    ),
    "a coordinator of another deployment": (
        ["--type", "AgentScopeWorkflow", "--workflow-id", "evil"],
        "no deployment settings",
    ),
    "a user's coordinator while the scope is global": (
        ["--type", "AgentScopeWorkflow", "--workflow-id", f"{WORKFLOW_ID}:user:{USER_ID}"],
        "not a scope of this deployment",
    ),
    "another type": (["--type", "ClaimsWorkflow", "--workflow-id", SLOT], "Unsupported"),
}
# A user of its own, so any agent these starts ran would be told apart in the workers' logs.
FORGED_USER = "0f0f0f0f-0000-4000-8000-0000000f0f0f"
OLD_INPUT = json.dumps(
    {
        "agent_type": "policy-checker",
        "user_id": FORGED_USER,
        "handoff": {},
        "scope": {"base": "evil"},
    }
)


@pytest.mark.parametrize("case", ODD_STARTS)
async def test_a_start_that_is_not_its_coordinators_grant_never_runs_an_agent(
    stack: Stack, http: httpx.AsyncClient, case: str
) -> None:
    """Findings 1 and 6 of the trust issue: starts on any id ran agents beside the slot, and
    the queue's type on a slot id held it for minutes."""
    args, reason = ODD_STARTS[case]
    started = await cli(
        stack,
        "workflow",
        "start",
        "--task-queue",
        TASK_QUEUE,
        "--input",
        OLD_INPUT,
        "-o",
        "json",
        *args,
    )
    assert started.returncode == 0, started.stderr
    workflow_id = args[args.index("--workflow-id") + 1]
    run = json.loads(started.stdout)["runId"]

    async def closed() -> str:
        shown = await cli(
            stack,
            "workflow",
            "describe",
            "--workflow-id",
            workflow_id,
            "--run-id",
            run,
            "-o",
            "json",
        )
        assert shown.returncode == 0, shown.stderr
        info = json.loads(shown.stdout)["workflowExecutionInfo"]
        assert info["status"] == "WORKFLOW_EXECUTION_STATUS_FAILED", info["status"]
        return shown.stdout

    described = await assert_eventually(closed, timeout=30)
    result = await cli(stack, "workflow", "result", "--workflow-id", workflow_id, "--run-id", run)

    assert reason in result.stdout + result.stderr + described
    run_id = await start_run(http)
    assert (await final(http, run_id))["state"] == "DONE"
    every_start = [line for w in stack.every_worker for line in w.log.events("agent_start")]
    assert run_id in {line["run_id"] for line in every_start}
    assert not [line for line in every_start if line["user_id"] == FORGED_USER]


async def test_a_deployment_made_up_on_our_task_queue_gets_no_agent_from_our_workers(
    stack: Stack,
) -> None:
    """Another client writes a settings record of its own (N=3) and admits runs to its own
    coordinator on our task queue: the coordinator grants them, but our workers run agents
    only for their own deployment (WORKFLOW_ID), so no agent works beyond our N."""
    evil = f"evil{uuid.uuid4().hex[:8]}"
    record = {"scope_kind": "global", "limits": {"slots": 3, "queue_max": 10}}
    requests = [
        {"request_id": f"evil-{i}", "run": {"agent_type": "policy-checker", "user_id": FORGED_USER}}
        for i in range(3)
    ]
    try:
        seeded = await cli(
            stack, "workflow", "start", "--type", "AgentRunnerSettingsWorkflow",
            "--task-queue", TASK_QUEUE, "--workflow-id", f"{evil}:settings",
            "--input", json.dumps(record),
        )  # fmt: skip
        assert seeded.returncode == 0, seeded.stderr
        admitted = await cli(
            stack, "workflow", "execute-update-with-start", "--workflow-id", evil,
            "--type", "AgentScopeWorkflow", "--task-queue", TASK_QUEUE,
            "--id-conflict-policy", "UseExisting", "--update-name", "admit",
            "--update-input", json.dumps(requests), "-o", "json",
        )  # fmt: skip
        assert admitted.returncode == 0, admitted.stderr
        answers = json.loads(admitted.stdout)["updateResult"]
        assert {answer["admission"] for answer in answers} == {"started"}

        def refusals() -> list[dict[str, Any]]:
            lines = [w.log.events("agent_not_started") for w in stack.every_worker]
            return [line for found in lines for line in found if evil in line["reason"]]

        async def refused() -> None:
            assert len({line["run_id"] for line in refusals()}) == 3, refusals()

        await assert_eventually(refused, timeout=60)
    finally:
        for workflow_id in (evil, f"{evil}:settings", *(f"{evil}:slot-{k}" for k in range(3))):
            await cli(stack, "workflow", "terminate", "--workflow-id", workflow_id)
    every_start = [line for w in stack.every_worker for line in w.log.events("agent_start")]
    assert not [line for line in every_start if line["user_id"] == FORGED_USER]


async def test_a_standalone_run_agent_activity_never_runs_an_agent(stack: Stack) -> None:
    """`temporal activity start` (a standalone activity) of our agents' activity, on an agent's
    own task queue: no run holds a slot for it, so it starts no agent."""
    activity_id = f"forged-{uuid.uuid4()}"
    started = await cli(
        stack,
        "activity",
        "start",
        "--activity-id",
        activity_id,
        "--type",
        "run_agent",
        "--task-queue",
        f"{TASK_QUEUE}.agents.policy-checker",
        "--start-to-close-timeout",
        "30s",
        "--input",
        json.dumps(
            {
                "run_id": activity_id,
                "agent_type": "policy-checker",
                "user_id": USER_ID,
                "attempt": 1,
                "max_attempts": 1,
                "timeout_seconds": 10,
                "heartbeat_timeout_seconds": 5,
            }
        ),
    )
    assert started.returncode == 0, started.stderr

    async def refused() -> None:
        assert [
            line
            for worker in stack.every_worker
            for line in worker.log.events("agent_not_started")
            if line.get("run_id") == activity_id
        ]

    await assert_eventually(refused, timeout=30)
    assert not [
        line
        for worker in stack.every_worker
        for line in worker.log.events("agent_start")
        if line.get("run_id") == activity_id
    ]


async def test_a_replica_with_another_n_follows_the_deployment_and_another_scope_refuses(
    stack: Stack, http: httpx.AsyncClient, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Finding 8: an API with AGENT_SLOTS=2 beside a 1-slot deployment let two agents work."""
    from devtools.processes import free_port

    logs = tmp_path_factory.mktemp("replicas")
    port = free_port()
    other_api = LoggedProcess.api(stack.settings(agent_slots=2, api_port=port), logs / "api.log")
    wrong_worker = LoggedProcess.worker(
        stack.settings(agent_scope="user_id"), logs / "worker.log", ready=False
    )
    try:
        other = f"http://127.0.0.1:{port}"
        from tests.helpers import wait_http

        await wait_http(f"{other}/healthz")
        payload = {"agent_type": "policy-checker", "user_id": USER_ID}
        async with httpx.AsyncClient(timeout=30.0) as client:
            answers = await asyncio.gather(
                *(
                    client.post(f"{base}/agents/run", json=payload)
                    for base in (other, stack.api_url(0))
                    for _ in range(10)
                )
            )
        assert [answer.status_code for answer in answers].count(202) == 1, answers
        differ = other_api.log.events("deployment_settings_differ")
        assert differ
        assert differ[0]["deployment_slots"] == 1
        assert wrong_worker.process.wait(timeout=60) == 2
        assert wrong_worker.log.events("deployment_mismatch")
    finally:
        other_api.stop()
        wrong_worker.kill()


async def test_a_terminated_coordinators_queue_is_taken_over_by_its_successor(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    """Terminating a scope's coordinator loses nothing: the next start's coordinator takes over
    what the terminated one carried (its queue, keys and records), and the run it had started
    goes on on its slot."""
    first = await start_run(http)
    behind = [await enqueue(http) for _ in range(2)]
    await agent_working(stack, first)

    terminated = await cli(stack, "workflow", "terminate", "--workflow-id", WORKFLOW_ID)
    assert terminated.returncode == 0, terminated.stderr
    after = await enqueue(http)  # reaches a new coordinator, which takes over

    runs = [first, *behind, after]
    finals = [await final(http, run_id) for run_id in runs]
    assert [body["state"] for body in finals] == ["DONE"] * 4
    starts = [body["started_at"] for body in finals]
    assert starts == sorted(starts), "the queue kept its order"
    assert overlapping(spans_of(stack, *runs)) == []


async def test_a_cancel_of_a_coordinator_is_ignored(stack: Stack, http: httpx.AsyncClient) -> None:
    first = await start_run(http)
    waiting = await enqueue(http)

    cancelled = await cli(stack, "workflow", "cancel", "--workflow-id", WORKFLOW_ID)

    assert cancelled.returncode == 0, cancelled.stderr
    assert (await final(http, first))["state"] == "DONE"
    assert (await final(http, waiting))["state"] == "DONE"


# --- cancels --------------------------------------------------------------------------------------


async def test_a_cancel_reaches_the_agent_within_moments(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    run_id = await start_run(http)
    await agent_working(stack, run_id)
    await asyncio.sleep(0.3)

    response = await http.post(f"/agents/runs/{run_id}/cancel")
    body = await final(http, run_id)

    # 200 once the run has ended, 202 while its agent is still stopping (the API waits a few
    # seconds, which a starved machine can outlast); either way the agent was the one stopped.
    assert response.status_code in (200, 202), response.text
    assert (body["state"], body["error"]) == ("ERROR", "cancelled")
    [stopped] = lines(stack, "agent_cancelled", run_id)
    assert stopped["attempt"] == body["attempt"]
    assert not lines(stack, "agent_complete", run_id)


async def test_a_cancel_at_the_hand_over_stops_only_its_own_run(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    """Finding 1 of the exactly-once issue: a cancel of a queued run at the moment a slot claimed
    it stopped the whole queue; the cancelled run later read DONE, then PENDING."""
    for delay in (AGENT_SECONDS - 0.3, AGENT_SECONDS - 0.1, AGENT_SECONDS, AGENT_SECONDS + 0.1):
        first = await start_run(http)
        cancelled, behind = await enqueue(http), await enqueue(http)
        await agent_working(stack, first)
        await asyncio.sleep(delay)

        response = await http.post(f"/agents/runs/{cancelled}/cancel")

        assert response.status_code in (200, 202, 409), response.text
        ended = await final(http, cancelled)
        assert (await final(http, behind))["state"] == "DONE"
        if response.status_code == 409:
            assert ended["state"] == "DONE"
        else:
            assert (ended["state"], ended["error"]) == ("ERROR", "cancelled")
            again = await http.post(f"/agents/runs/{cancelled}/cancel")
            assert again.status_code == 409
        assert (await status(http, cancelled)) == ended, "a final status never changes"


async def test_a_cancel_while_the_workers_are_paused_ends_a_waiting_run_at_once(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    first = await start_run(http)
    waiting = await enqueue(http)
    await agent_working(stack, first)
    for index in range(len(stack.workers)):
        stack.pause_worker(index)

    response = await http.post(f"/agents/runs/{waiting}/cancel")
    for index in range(len(stack.workers)):
        stack.resume_worker(index)

    assert response.status_code in (200, 503), response.text
    body = await final(http, waiting)
    assert (body["state"], body["error"]) == ("ERROR", "cancelled") or response.status_code == 503
    assert not lines(stack, "agent_start", waiting) or response.status_code == 503
    await final(http, first)


# --- over the whole module ------------------------------------------------------------------------


async def test_every_attempt_logged_exactly_one_end_line(stack: Stack) -> None:
    """Finding 7 of the exactly-once issue: attempts that ended with no end line."""
    for worker in stack.every_worker:
        log = worker.log.read()
        starts = [line for line in log if line.get("event") == "agent_start"]
        for start in starts:
            key = (start["run_id"], start["attempt"], start["fencing_token"])
            ends = [
                line
                for line in log
                if line.get("event") in END_EVENTS
                and (line.get("run_id"), line.get("attempt"), line.get("fencing_token")) == key
            ]
            assert len(ends) == 1, (start, ends)


async def test_no_two_agents_ever_worked_at_once_in_this_module(stack: Stack) -> None:
    spans = stack.spans()
    assert spans
    assert overlapping(spans) == []
