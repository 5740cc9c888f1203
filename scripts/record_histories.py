"""``make histories``: record the histories of every workflow of ours, in every kind of ending,
into tests/histories/.

tests/test_replay.py replays each with ``temporalio.worker.Replayer``: a change to the workflows
that would break the executions open when it is deployed fails CI. Record again (and commit)
only when a change is meant to be incompatible and is deployed as such (see docs/operations.md,
"Changing the workflows safely").
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

from temporalio.client import Client, WorkflowHandle

from activities.builtin_agents import PolicyChecker
from agent_runner.agent_registry import AgentRegistry
from agent_runner.agents import Agent, AgentContext, NoParams
from agent_runner.deployment import join_deployment
from agent_runner.logs import configure_logging
from agent_runner.process import exit_now
from agent_runner.runs import OnBusy, Runs, RunStatus, start_request
from agent_runner.settings import Settings
from devtools.processes import EXAMPLE_USER_ID, ROOT, in_process_dev_server
from worker import build_workers

HISTORIES = ROOT / "tests" / "histories"
# `make histories ADD=<version>`: record beside the histories already there (each name
# prefixed), for a compatible change whose new code paths should replay too.
PREFIX = f"{os.environ['ADD']}-" if os.environ.get("ADD") else ""
WAIT = timedelta(seconds=60)
Scenario = Callable[[Runs, Settings], Awaitable[None]]


class AlwaysFails(Agent[NoParams]):
    name = "document-extractor"

    async def run(self, ctx: AgentContext, params: NoParams) -> str:
        await ctx.report_progress(0.5, "reading")
        raise RuntimeError("scanner offline")


def settings_for(address: str, name: str, **more: Any) -> Settings:
    return Settings(
        _env_file=None,
        temporal_address=address,
        task_queue=f"history-{name}",
        workflow_id=f"history-{name}",
        agent_max_attempts=3,
        agent_heartbeat_timeout_seconds=3.0,
        agent_retry_initial_interval_seconds=0.1,
        worker_graceful_shutdown_seconds=1.0,
        **more,
    )


async def start(runs: Runs, settings: Settings, agent_type: str, on_busy: OnBusy) -> str:
    request = start_request(
        agent_type, EXAMPLE_USER_ID, policy=settings.run_policy(), on_busy=on_busy
    )
    return (await runs.start(request)).run_id


async def ended(runs: Runs, run_id: str) -> RunStatus:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT.total_seconds()
    while loop.time() < deadline:
        status = await runs.status(run_id)
        if status.is_final:
            return status
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{run_id} did not end")


async def done(runs: Runs, settings: Settings) -> None:
    await ended(runs, await start(runs, settings, "policy-checker", OnBusy.REJECT))


async def error_after_retries(runs: Runs, settings: Settings) -> None:
    await ended(runs, await start(runs, settings, "document-extractor", OnBusy.REJECT))


async def cancelled(runs: Runs, settings: Settings) -> None:
    """A working run cancelled, and a waiting one."""
    working = await start(runs, settings, "policy-checker", OnBusy.REJECT)
    waiting = await start(runs, settings, "policy-checker", OnBusy.ENQUEUE)
    await asyncio.sleep(1.0)
    await runs.cancel(waiting)
    await runs.cancel(working)
    await ended(runs, working)


async def terminated(runs: Runs, settings: Settings) -> None:
    """A run terminated while its agent works, its slot handed to the next once it drained."""
    first = await start(runs, settings, "policy-checker", OnBusy.REJECT)
    second = await start(runs, settings, "policy-checker", OnBusy.ENQUEUE)
    await asyncio.sleep(1.0)
    status = await runs.status(first)
    assert status.workflow_id is not None
    handle = runs.client.get_workflow_handle(status.workflow_id, run_id=status.temporal_run_id)
    await handle.terminate("recorded for the replay tests")
    await runs.cancel(second)
    await ended(runs, second)


async def queue(runs: Runs, settings: Settings) -> None:
    """Runs that wait their turn, over the coordinator's continue-as-new (the recording
    server suggests it early), one refused start and a repeated key."""
    run_ids = [await start(runs, settings, "policy-checker", OnBusy.ENQUEUE) for _ in range(4)]
    keyed = start_request(
        "policy-checker",
        EXAMPLE_USER_ID,
        policy=settings.run_policy(),
        idempotency_key="history-key",
        on_busy=OnBusy.ENQUEUE,
    )
    for _ in range(2):
        run_ids.append((await runs.start(keyed)).run_id)
    for run_id in run_ids:
        await ended(runs, run_id)


async def not_granted(runs: Runs, settings: Settings) -> None:
    """Starts another client makes of our workflows on their own: each ends at once."""
    client = runs.client
    for workflow_type, workflow_id in (
        ("AgentRunWorkflow", f"{settings.workflow_id}:slot-0"),
        ("AgentScopeWorkflow", f"{settings.workflow_id}:slot-1"),
    ):
        handle = await client.start_workflow(
            workflow_type,
            {"agent_type": "policy-checker", "user_id": EXAMPLE_USER_ID},
            id=workflow_id,
            task_queue=settings.task_queue,
        )
        await _closed(handle)


async def _closed(handle: WorkflowHandle[Any, Any]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT.total_seconds()
    while loop.time() < deadline:
        if (await handle.describe()).close_time is not None:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{handle.id} still open after {WAIT}")


async def record(client: Client, name: str, settings: Settings) -> None:
    """Every execution of the scenario's deployment, one file each."""
    base = settings.workflow_id
    executions = [
        execution
        async for execution in client.list_workflows(f"WorkflowId STARTS_WITH '{base}'")
        if execution.close_time is not None
    ]
    executions.sort(key=lambda execution: (execution.workflow_type, execution.start_time))
    for index, execution in enumerate(executions):
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        history = await handle.fetch_history()
        path = HISTORIES / f"{PREFIX}{name}-{execution.workflow_type}-{index}.json"
        path.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
        print(f"wrote {path.relative_to(ROOT)} ({len(history.events)} events)")


async def scenario(client: Client, name: str, agents: Sequence[Agent[Any]], act: Scenario) -> None:
    address = client.service_client.config.target_host
    settings = settings_for(address, name)
    await join_deployment(client, settings, role="make histories")
    async with build_workers(client, settings, AgentRegistry.of(agents)):
        await act(Runs(client, settings.run_target()), settings)
        # The coordinators close once idle and retention passes; terminate them to record them.
        async for execution in client.list_workflows(
            f"WorkflowId STARTS_WITH '{settings.workflow_id}' AND ExecutionStatus = 'Running'"
        ):
            await client.get_workflow_handle(execution.id).terminate("recorded")
    await record(client, name, settings)


async def main() -> None:
    configure_logging("INFO", "json")
    HISTORIES.mkdir(parents=True, exist_ok=True)
    if not PREFIX:
        for old in HISTORIES.glob("*.json"):
            old.unlink()
    env = await in_process_dev_server(suggest_continue_as_new=40)
    async with env:
        client = env.client
        quick = [PolicyChecker(0.3)]
        await scenario(client, "done", quick, done)
        await scenario(client, "error-after-retries", [AlwaysFails()], error_after_retries)
        await scenario(client, "cancelled", [PolicyChecker(30)], cancelled)
        await scenario(client, "terminated", [PolicyChecker(30)], terminated)
        await scenario(client, "queue", quick, queue)
        await scenario(client, "not-granted", quick, not_granted)
    print("recorded: run `pytest tests/test_replay.py`, then commit tests/histories/")


if __name__ == "__main__":
    asyncio.run(main())
    exit_now()  # not CPython's teardown, which the SDK's threads can abort (exit code 134)
