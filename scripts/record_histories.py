"""``make histories``: record one workflow history per kind of ending into tests/histories/.

tests/test_replay.py replays each with ``temporalio.worker.Replayer``: a change to the workflows
that would break the runs open when it is deployed fails CI. Record again (and commit) only
when a change is meant to be incompatible and is deployed as such (see README, "Changing the
workflows safely").
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.builtin_agents import PolicyChecker
from agent_runner import search_attributes
from agent_runner.agent_registry import AgentRegistry
from agent_runner.agents import Agent, AgentContext, NoParams
from agent_runner.logs import configure_logging
from agent_runner.models import WORKFLOW_TYPE
from agent_runner.runs import OnBusy, cancel_run, start_request, start_run_detailed
from agent_runner.runs.types import RunTarget
from agent_runner.runs.waiting import wait_for_end
from agent_runner.settings import Settings
from devtools.processes import DYNAMIC_CONFIG, EXAMPLE_USER_ID, ROOT, temporal_cli
from worker import build_workers

HISTORIES = ROOT / "tests" / "histories"
WAIT = timedelta(seconds=60)


class AlwaysFails(Agent[NoParams]):
    name = "document-extractor"

    async def run(self, ctx: AgentContext, params: NoParams) -> str:
        await ctx.report_progress(0.5, "reading")
        raise RuntimeError("scanner offline")


def settings_for(address: str, name: str) -> Settings:
    return Settings(
        _env_file=None,
        temporal_address=address,
        task_queue=f"history-{name}",
        workflow_id=f"history-{name}",
        agent_max_attempts=3,
        agent_heartbeat_timeout_seconds=3.0,
        agent_retry_initial_interval_seconds=0.1,
        worker_graceful_shutdown_seconds=1.0,
    )


async def start(client: Client, settings: Settings, agent_type: str, on_busy: OnBusy) -> str:
    request = start_request(
        agent_type, EXAMPLE_USER_ID, policy=settings.run_policy(), on_busy=on_busy
    )
    outcome = await start_run_detailed(client, request, target=settings.run_target())
    return outcome.run_id


async def record(client: Client, name: str, handles: list[WorkflowHandle[object, object]]) -> None:
    for index, handle in enumerate(handles):
        history = await handle.fetch_history()
        suffix = f"-{index}" if len(handles) > 1 else ""
        path = HISTORIES / f"{name}{suffix}.json"
        path.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
        print(f"wrote {path.relative_to(ROOT)} ({len(history.events)} events)")


async def scenario(
    client: Client,
    name: str,
    agents: Sequence[Agent[Any]],
    act: Callable[[Client, Settings, RunTarget], Awaitable[list[WorkflowHandle[object, object]]]],
) -> None:
    address = client.service_client.config.target_host
    settings = settings_for(address, name)
    async with build_workers(client, settings, AgentRegistry.of(agents)):
        handles = await act(client, settings, settings.run_target())
    await record(client, name, handles)


def slot(client: Client, target: RunTarget, run_id: str) -> WorkflowHandle[object, object]:
    return client.get_workflow_handle(target.workflow_id, run_id=run_id)


async def _to_its_end(
    client: Client, settings: Settings, target: RunTarget, agent_type: str
) -> list[WorkflowHandle[object, object]]:
    run_id = await start(client, settings, agent_type, OnBusy.REJECT)
    await wait_for_end(client, run_id, wait=WAIT, target=target)
    return [slot(client, target, run_id)]


async def done(
    client: Client, settings: Settings, target: RunTarget
) -> list[WorkflowHandle[object, object]]:
    return await _to_its_end(client, settings, target, "policy-checker")


async def error_after_retries(
    client: Client, settings: Settings, target: RunTarget
) -> list[WorkflowHandle[object, object]]:
    return await _to_its_end(client, settings, target, "document-extractor")


async def cancelled(
    client: Client, settings: Settings, target: RunTarget
) -> list[WorkflowHandle[object, object]]:
    run_id = await start(client, settings, "policy-checker", OnBusy.REJECT)
    await asyncio.sleep(1.0)
    await cancel_run(client, run_id, target=target)
    await wait_for_end(client, run_id, wait=WAIT, target=target)
    return [slot(client, target, run_id)]


async def terminated(
    client: Client, settings: Settings, target: RunTarget
) -> list[WorkflowHandle[object, object]]:
    run_id = await start(client, settings, "policy-checker", OnBusy.REJECT)
    await asyncio.sleep(1.0)
    await slot(client, target, run_id).terminate("recorded for the replay tests")
    return [slot(client, target, run_id)]


async def cli_inputs(
    client: Client, settings: Settings, target: RunTarget
) -> list[WorkflowHandle[object, object]]:
    """What the `temporal` CLI starts: bad input (ERROR at once), then good input (a run that
    waits one lease for a predecessor nobody saw stop, then runs)."""
    handles = []
    for payload in (
        {"agent_type": "policy-checker", "user_id": "bob"},
        {"agent_type": "policy-checker", "user_id": EXAMPLE_USER_ID},
    ):
        handle = await client.start_workflow(
            WORKFLOW_TYPE, payload, id=target.workflow_id, task_queue=target.task_queue
        )
        await wait_for_end(client, handle.result_run_id or "", wait=WAIT, target=target)
        handles.append(slot(client, target, handle.result_run_id or ""))
    return handles


async def queue(
    client: Client, settings: Settings, target: RunTarget
) -> list[WorkflowHandle[object, object]]:
    """Three runs for one slot: the second and third wait in the queue and get the slot by
    continue-as-new."""
    run_ids = [await start(client, settings, "policy-checker", OnBusy.ENQUEUE) for _ in range(3)]
    for run_id in run_ids:
        await wait_for_end(client, run_id, wait=WAIT, target=target)
    handles: list[WorkflowHandle[object, object]] = []
    async for execution in client.list_workflows(f"WorkflowId STARTS_WITH '{target.workflow_id}'"):
        handles.append(client.get_workflow_handle(execution.id, run_id=execution.run_id))
    return sorted(handles, key=lambda handle: (handle.id, handle.run_id or ""))


async def main() -> None:
    configure_logging("INFO", "json")
    HISTORIES.mkdir(parents=True, exist_ok=True)
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_cli()),
        search_attributes=list(search_attributes.ALL),
        dev_server_log_level="error",
        dev_server_extra_args=[
            f"--dynamic-config-value={k}={v}" for k, v in DYNAMIC_CONFIG.items()
        ],
    )
    async with env:
        client = env.client
        quick = [PolicyChecker(0.3)]
        await scenario(client, "done", quick, done)
        await scenario(client, "error-after-retries", [AlwaysFails()], error_after_retries)
        await scenario(client, "cancelled", [PolicyChecker(30)], cancelled)
        await scenario(client, "terminated", [PolicyChecker(30)], terminated)
        await scenario(client, "cli-inputs", quick, cli_inputs)
        await scenario(client, "queue", quick, queue)
    print("recorded: run `pytest tests/test_replay.py`, then commit tests/histories/")


if __name__ == "__main__":
    asyncio.run(main())
