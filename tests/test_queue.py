"""The queue, N slots and scopes, through the Python API other services use (the Runs service),
against the session's real Temporal server with a real worker in the test process (so its
agents' log lines can be read)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from datetime import datetime
from typing import Any

import pytest
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.worker import Replayer

from activities.builtin_agents import builtin_agents
from agent_runner.agent_registry import AgentRegistry
from agent_runner.contract import ADMIT, READ_SETTINGS, AdmitRequest, RunRequest
from agent_runner.deployment import join_deployment
from agent_runner.runs import (
    AgentBusyError,
    OnBusy,
    QueueFullError,
    Runs,
    RunState,
    RunStatus,
    start_request,
)
from agent_runner.settings import Settings
from devtools.processes import temporal_cli
from tests.helpers import (
    USER_ID,
    ListHandler,
    assert_eventually,
    coordinating_worker,
    in_process_worker,
    make_settings,
)
from worker import WORKFLOW_RUNNER, Workers, agent_workers
from workflows.agent_run import AgentRunWorkflow
from workflows.scope import AgentScopeWorkflow
from workflows.settings import AgentRunnerSettingsWorkflow

# Every run of these tests has this much to do.
AGENT_SECONDS = 0.6
END_EVENTS = ("agent_complete", "agent_error", "agent_cancelled", "agent_lease_lost")


def queue_settings(temporal_address: str, **more: Any) -> Settings:
    values: dict[str, Any] = {"agent_duration_seconds": AGENT_SECONDS, **more}
    return make_settings(temporal_address, task_queue=f"queue-{uuid.uuid4()}", **values)


_SERVICES: dict[str, Runs] = {}


async def runs_of(client: Client, settings: Settings) -> Runs:
    """The Runs service of the test's deployment (its record seeded from ``settings``)."""
    if settings.workflow_id not in _SERVICES:
        await join_deployment(client, settings, role="a test")
        _SERVICES[settings.workflow_id] = Runs(client, settings.run_target())
    return _SERVICES[settings.workflow_id]


async def start(
    client: Client,
    settings: Settings,
    on_busy: OnBusy = OnBusy.ENQUEUE,
    *,
    user_id: str = USER_ID,
    agent_type: str = "policy-checker",
) -> tuple[str, int | None]:
    request = start_request(agent_type, user_id, policy=settings.run_policy(), on_busy=on_busy)
    outcome = await (await runs_of(client, settings)).start(request)
    return outcome.run_id, outcome.queue_position


async def histories_that_do_not_replay(
    client: Client, settings: Settings
) -> list[tuple[str, str, str]]:
    """Every execution of the deployment's task queue replayed on today's code: (workflow id,
    run id, failure) of each that did not replay as it ran."""
    replayer = Replayer(
        workflows=[AgentRunWorkflow, AgentScopeWorkflow, AgentRunnerSettingsWorkflow],
        workflow_runner=WORKFLOW_RUNNER,
    )
    failures = []
    async for execution in client.list_workflows(f"TaskQueue = '{settings.task_queue}'"):
        history = await client.get_workflow_handle(
            execution.id, run_id=execution.run_id
        ).fetch_history()
        replayed = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        if replayed.replay_failure is not None:
            failures.append((execution.id, execution.run_id, str(replayed.replay_failure)[:300]))
    return failures


async def status(client: Client, settings: Settings, run_id: str) -> RunStatus:
    return await (await runs_of(client, settings)).status(run_id)


async def cancel_run(client: Client, settings: Settings, run_id: str) -> RunStatus:
    await (await runs_of(client, settings)).cancel(run_id)
    return await status(client, settings, run_id)


async def all_final(client: Client, settings: Settings, run_ids: list[str]) -> list[RunStatus]:
    async def check() -> list[RunStatus]:
        statuses = [await status(client, settings, run_id) for run_id in run_ids]
        assert all(s.is_final for s in statuses), [(s.run_id, s.state) for s in statuses]
        return statuses

    # One after another, each a few workflow tasks: the deadline grows with the queue.
    return await assert_eventually(check, timeout=max(60, 5 * len(run_ids)), interval=0.2)


def spans(log_lines: ListHandler, run_ids: list[str]) -> list[tuple[datetime, datetime, str]]:
    """(start, end, run) of every agent attempt of these runs, from the agents' log lines."""
    started: dict[tuple[str, int], datetime] = {}
    found = []
    for line in log_lines.lines:
        key = (line.get("run_id"), line.get("attempt"))
        if line.get("event") == "agent_start":
            started[key] = datetime.fromisoformat(line["timestamp"])
        elif line.get("event") in END_EVENTS and key in started:
            end = datetime.fromisoformat(line["timestamp"])
            found.append((started.pop(key), end, str(line.get("run_id"))))
    return sorted(found)


def most_at_once(intervals: list[tuple[datetime, datetime, str]]) -> int:
    events = sorted([(s, 1) for s, _, _ in intervals] + [(e, -1) for _, e, _ in intervals])
    current = peak = 0
    for _, change in events:
        current += change
        peak = max(peak, current)
    return peak


async def test_runs_wait_in_order_and_each_runs_exactly_once(
    temporal_client: Client, temporal_address: str, log_lines: ListHandler
) -> None:
    settings = queue_settings(temporal_address)
    async with in_process_worker(temporal_client, settings):
        accepted = [await start(temporal_client, settings) for _ in range(5)]
        finals = await all_final(temporal_client, settings, [run_id for run_id, _ in accepted])

    assert [position for _, position in accepted] == [None, 1, 2, 3, 4]
    assert [s.state for s in finals] == [RunState.DONE] * 5
    started = [s.started_at for s in finals]
    assert started == sorted(started), "runs started in the order they were accepted"
    run_ids = [s.run_id for s in finals]
    agent_starts = [line["run_id"] for line in log_lines.events("agent_start")]
    assert sorted(agent_starts) == sorted(run_ids), "every run's agent ran exactly once"
    assert most_at_once(spans(log_lines, run_ids)) == 1
    assert all(s.queue_position is None for s in finals)
    assert finals[1].temporal_run_id != finals[1].run_id
    assert finals[1].workflow_id == f"{settings.workflow_id}:slot-0"


async def test_a_queued_run_is_cancelled_at_once_and_those_behind_move_up(
    temporal_client: Client, temporal_address: str
) -> None:
    settings = queue_settings(temporal_address, agent_duration_seconds=3.0)
    async with in_process_worker(temporal_client, settings):
        [first, second, third] = [(await start(temporal_client, settings))[0] for _ in range(3)]
        assert (await status(temporal_client, settings, third)).queue_position == 2

        cancelled = await cancel_run(temporal_client, settings, second)

        assert cancelled.state == RunState.ERROR
        assert cancelled.error == "cancelled"
        assert (await status(temporal_client, settings, third)).queue_position == 1
        finals = await all_final(temporal_client, settings, [first, third])
        # A run that ended in its queue is known to its coordinator only (a workflow).
        after = await status(temporal_client, settings, second)

    assert [s.state for s in finals] == [RunState.DONE, RunState.DONE]
    assert after.error == "cancelled"
    # Failed before the fix: agent_type, user_id and queued_at were gone once cancelled.
    assert (after.agent_type, after.user_id) == ("policy-checker", USER_ID)
    assert after.queued_at is not None
    assert after.finished_at is not None
    assert after.finished_at >= after.queued_at
    assert after.attempt == 0


async def test_no_start_jumps_the_queue_even_between_two_runs(
    temporal_client: Client, temporal_address: str
) -> None:
    settings = queue_settings(temporal_address, agent_duration_seconds=1.0)
    async with in_process_worker(temporal_client, settings):
        queued = [(await start(temporal_client, settings))[0] for _ in range(4)]
        accepted: list[str] = []
        rejected = 0

        async def queue_drained() -> bool:
            last = await status(temporal_client, settings, queued[-1])
            return last.queue_position is None and last.state != RunState.PENDING

        while not await queue_drained():
            try:
                accepted.append((await start(temporal_client, settings, OnBusy.REJECT))[0])
            except AgentBusyError:
                rejected += 1
        waited = await all_final(temporal_client, settings, queued)
        others = await all_final(temporal_client, settings, accepted)

    # A start sent while runs waited may be decided after the last of them got its slot (on a
    # slow machine, one sent again after meeting its coordinator continuing as new was granted
    # once the queue had drained): that is no jump. A jump is a grant before a waiting run's.
    last_grant = max(s.started_at for s in waited if s.started_at is not None)
    jumped = [s.run_id for s in others if s.started_at is None or s.started_at < last_grant]
    assert jumped == [], "a start that will not wait got a slot while runs were queued"
    # How many starts fit in the drain depends on the machine's speed (a dozen on a quiet one, a
    # few with one core busy and other suites beside): that some met the queue is what counts.
    assert rejected > 0, "no start was sent while runs were queued"


async def test_a_full_queue_refuses_more(temporal_client: Client, temporal_address: str) -> None:
    settings = queue_settings(temporal_address, agent_duration_seconds=3.0, agent_queue_max=2)
    async with in_process_worker(temporal_client, settings):
        run_ids = [(await start(temporal_client, settings))[0] for _ in range(3)]
        with pytest.raises(QueueFullError):
            await start(temporal_client, settings)
        for run_id in reversed(run_ids):
            await cancel_run(temporal_client, settings, run_id)


async def test_n_slots_run_n_agents_at_once_and_never_more(
    temporal_client: Client, temporal_address: str, log_lines: ListHandler
) -> None:
    settings = queue_settings(temporal_address, agent_duration_seconds=1.5, agent_slots=2)
    async with in_process_worker(temporal_client, settings):
        accepted = [await start(temporal_client, settings) for _ in range(5)]
        with pytest.raises(AgentBusyError):
            await start(temporal_client, settings, OnBusy.REJECT)
        finals = await all_final(temporal_client, settings, [run_id for run_id, _ in accepted])

    assert [position for _, position in accepted] == [None, None, 1, 2, 3]
    assert all(s.state == RunState.DONE for s in finals)
    assert {s.workflow_id for s in finals} == {
        f"{settings.workflow_id}:slot-0",
        f"{settings.workflow_id}:slot-1",
    }
    assert most_at_once(spans(log_lines, [s.run_id for s in finals])) == 2


async def test_user_scope_runs_each_user_on_their_own_slots(
    temporal_client: Client, temporal_address: str
) -> None:
    settings = queue_settings(temporal_address, agent_duration_seconds=2.0, agent_scope="user_id")
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    async with in_process_worker(temporal_client, settings):
        first = await start(temporal_client, settings, OnBusy.REJECT, user_id=alice)
        second = await start(temporal_client, settings, OnBusy.REJECT, user_id=bob)
        with pytest.raises(AgentBusyError):
            await start(temporal_client, settings, OnBusy.REJECT, user_id=alice)
        queued = await start(temporal_client, settings, user_id=alice)
        finals = await all_final(temporal_client, settings, [first[0], second[0], queued[0]])

    assert first[1] is None
    assert second[1] is None
    assert queued[1] == 1
    assert [s.user_id for s in finals] == [alice, bob, alice]
    assert finals[0].workflow_id == f"{settings.workflow_id}:user:{alice}:slot-0"
    assert finals[0].run_id.endswith(f"~u{uuid.UUID(alice).hex}")
    assert all(s.state == RunState.DONE for s in finals)


async def test_a_terminated_run_hands_its_slot_to_the_queue_once_its_agent_stopped(
    temporal_client: Client, temporal_address: str, log_lines: ListHandler
) -> None:
    settings = queue_settings(temporal_address, agent_duration_seconds=30.0)
    async with in_process_worker(temporal_client, settings):
        running, _ = await start(temporal_client, settings)
        queued, position = await start(temporal_client, settings)
        assert position == 1
        await assert_eventually(lambda: _agent_started(log_lines, running))

        holding = await status(temporal_client, settings, running)
        assert holding.workflow_id is not None
        handle = temporal_client.get_workflow_handle(
            holding.workflow_id, run_id=holding.temporal_run_id
        )
        await handle.terminate("operator")
        await assert_eventually(lambda: _agent_started(log_lines, queued), timeout=30)
        await cancel_run(temporal_client, settings, queued)

    stopped = [line for line in log_lines.events("agent_lease_lost") if line["run_id"] == running]
    [next_start] = [line for line in log_lines.events("agent_start") if line["run_id"] == queued]
    assert stopped, "the terminated run's agent stopped"
    assert stopped[0]["timestamp"] <= next_start["timestamp"]


async def test_a_queue_outlives_two_terminated_coordinators_of_which_the_second_never_ran(
    temporal_client: Client, temporal_address: str
) -> None:
    """Chaos seed 52973: a coordinator terminated, its successor terminated too before its first
    workflow task; the next one asked only that successor what it carried, could not, and
    started afresh: the queue and its keys were lost (404s, a key given a second run)."""
    settings = queue_settings(temporal_address, agent_duration_seconds=1.0)
    coordinator = settings.workflow_id
    async with in_process_worker(temporal_client, settings):
        accepted = [(await start(temporal_client, settings))[0] for _ in range(3)]
    # No worker now: the next coordinator is started and ended before any task of it runs.
    await temporal_client.get_workflow_handle(coordinator).terminate("an operator")
    await temporal_client.start_workflow(
        "AgentScopeWorkflow", id=coordinator, task_queue=settings.task_queue
    )
    await temporal_client.get_workflow_handle(coordinator).terminate("an operator, again")
    async with in_process_worker(temporal_client, settings):
        # The next start starts the next coordinator, which takes over the queue.
        accepted.append((await start(temporal_client, settings))[0])
        finals = await all_final(temporal_client, settings, accepted)

    assert [s.state for s in finals] == [RunState.DONE] * 4
    started = [s.started_at for s in finals]
    assert started == sorted(started), "the queue kept its order"


async def _agent_started(log_lines: ListHandler, run_id: str) -> None:
    assert any(line["run_id"] == run_id for line in log_lines.events("agent_start"))


async def test_other_systems_enqueue_with_the_cli_and_a_plain_temporal_client(
    temporal_client: Client, temporal_address: str
) -> None:
    settings = queue_settings(temporal_address, agent_duration_seconds=1.0)
    coordinator = settings.workflow_id
    run = {"agent_type": "policy-checker", "user_id": USER_ID}
    async with in_process_worker(temporal_client, settings):
        holder, _ = await start(temporal_client, settings)
        # In a thread: the worker in this process must go on answering while the CLI waits.
        cli = await asyncio.to_thread(
            subprocess.run,
            [
                str(temporal_cli()), "workflow", "execute-update-with-start",
                "--address", temporal_address,
                "--workflow-id", coordinator, "--type", "AgentScopeWorkflow",
                "--task-queue", settings.task_queue, "--id-conflict-policy", "UseExisting",
                "--update-name", "admit",
                "--update-input", json.dumps(
                    [{"request_id": f"crm-{uuid.uuid4()}", "run": run, "on_busy": "enqueue"}]
                ),
                "--output", "json",
            ],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        [by_cli] = json.loads(cli.stdout)["updateResult"]

        # Another Temporal client, knowing only names and JSON: no agent_runner package.
        plain = await Client.connect(temporal_address)
        [by_plain] = await plain.execute_update_with_start_workflow(
            "admit",
            [{"request_id": f"erp-{uuid.uuid4()}", "on_busy": "enqueue",
              "run": {"agent_type": "document-extractor", "user_id": USER_ID}}],
            start_workflow_operation=WithStartWorkflowOperation(
                "AgentScopeWorkflow", id=coordinator, task_queue=settings.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            ),
        )  # fmt: skip
        finals = await all_final(
            temporal_client, settings, [holder, by_cli["run_id"], by_plain["run_id"]]
        )

    assert (by_cli["admission"], by_cli["queue_position"]) == ("queued", 1)
    assert (by_plain["admission"], by_plain["queue_position"]) == ("queued", 2)
    assert [s.agent_type for s in finals] == [
        "policy-checker",
        "policy-checker",
        "document-extractor",
    ]
    assert all(s.state == RunState.DONE for s in finals)


async def test_a_long_queue_continues_as_new_and_loses_nothing(
    temporal_client: Client, temporal_address: str
) -> None:
    """The session's server suggests continue-as-new after a few hundred events (conftest)."""
    settings = queue_settings(temporal_address, agent_duration_seconds=0.0)
    async with in_process_worker(temporal_client, settings):
        accepted = [await start(temporal_client, settings) for _ in range(40)]
        finals = await all_final(temporal_client, settings, [run_id for run_id, _ in accepted])

    assert all(s.state == RunState.DONE for s in finals)
    started = [s.started_at for s in finals]
    assert started == sorted(started), "runs kept their order across continue-as-new"
    coordinators = [
        execution
        async for execution in temporal_client.list_workflows(
            f"WorkflowId = '{settings.workflow_id}'"
        )
    ]
    assert len(coordinators) > 1, "the coordinator continued as new"
    # Every execution replays as it ran. Under a busy core, a coordinator's code after its
    # start-up local activity ran now and then in the next workflow task, and replayed in the
    # one before: a patch it asked for there made a history that no longer replayed
    # (workflows/scope.py, PATCHES_FIRST); a worker that lost it from its cache failed its tasks.
    assert await histories_that_do_not_replay(temporal_client, settings) == []


async def test_admits_that_arrive_together_share_one_read_of_the_settings(
    temporal_client: Client, temporal_address: str
) -> None:
    """Each admit read the deployment's record itself: about ten history events per start, so
    a busy coordinator continued as new every few seconds, and a start that met it on its way
    out ran out of its budget (503; chaos seed 83339). An admit now decides with a read that
    came back within the last second (and after the limits last changed)."""
    settings = queue_settings(temporal_address, agent_duration_seconds=30.0)
    async with in_process_worker(temporal_client, settings):
        await start(temporal_client, settings, OnBusy.REJECT)
        handle = temporal_client.get_workflow_handle(settings.workflow_id)

        async def admit() -> None:
            request = AdmitRequest(
                f"request:{uuid.uuid4()}",
                RunRequest("policy-checker", USER_ID, policy=settings.run_policy()),
            )
            await handle.execute_update(ADMIT.name, [request], result_type=ADMIT.result_type)

        admits = 30
        await asyncio.gather(*(admit() for _ in range(admits)))
        reads, run_id = 0, (await handle.describe()).run_id
        while run_id:  # back through every continue-as-new
            execution = temporal_client.get_workflow_handle(settings.workflow_id, run_id=run_id)
            events = [event async for event in execution.fetch_history_events()]
            reads += sum(
                event.activity_task_scheduled_event_attributes.activity_type.name == READ_SETTINGS
                for event in events
            )
            run_id = events[
                0
            ].workflow_execution_started_event_attributes.continued_execution_run_id
    assert reads < admits


async def test_a_worker_that_takes_over_after_an_update_keeps_histories_that_replay(
    temporal_client: Client, temporal_address: str
) -> None:
    """A coordinator taken over by another worker (the one before it went away) after an admit
    answered in a task of its own, and granted in the new worker's first task, keeps a history
    that replays. (The short chaos run found two that did not, from a worker cut off and one
    killed: the worker that took over ran its first task with the time of the task before;
    workflows/scope.py, FRESH_TIMER_PATCH. A graceful hand-over here did not show that time.)"""
    settings = queue_settings(temporal_address, agent_duration_seconds=3.0)
    agents = AgentRegistry.of(builtin_agents(settings.agent_duration_seconds))
    async with Workers(agent_workers(temporal_client, settings, agents)):
        async with coordinating_worker(settings):
            first, _ = await start(temporal_client, settings, OnBusy.REJECT)

            async def running() -> None:
                assert (await status(temporal_client, settings, first)).state == RunState.RUNNING

            await assert_eventually(running)
            await asyncio.sleep(0.5)  # the coordinator idle: the admit comes in a task of its own
            # Queued behind the first.
            second, position = await start(temporal_client, settings)
            assert position == 1
        # Another worker takes the coordinator over; its first task grants the second run,
        # over a second after that admit (the first agent works 3 s).
        async with coordinating_worker(settings):

            async def done(run_id: str) -> None:
                assert (await status(temporal_client, settings, run_id)).state == RunState.DONE

            await assert_eventually(lambda: done(first), timeout=60)
            await assert_eventually(lambda: done(second), timeout=60)
    assert await histories_that_do_not_replay(temporal_client, settings) == []
