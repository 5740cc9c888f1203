"""Wiring only: connect to Temporal, join the deployment, and serve the workflows and the
agents' activities.

Run any number of these; Temporal hands each run's agent to one of them. SIGTERM/SIGINT stop
polling, let a running agent finish (up to WORKER_GRACEFUL_SHUTDOWN_SECONDS), then exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from datetime import timedelta
from typing import Any

import structlog
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities import AgentActivities
from activities.scope_ops import SCOPE_ACTIVITIES
from agent_runner.agent_registry import AgentRegistry
from agent_runner.connection import create_runtime
from agent_runner.connector import Connector
from agent_runner.deployment import DeploymentMismatchError, join_deployment
from agent_runner.ids import agent_task_queue
from agent_runner.logs import configure_logging
from agent_runner.process import exit_now
from agent_runner.settings import Settings, get_settings
from agent_runner.tracing import tracing_interceptors
from workflows.agent_run import AgentRunWorkflow
from workflows.scope import AgentScopeWorkflow
from workflows.settings import AgentRunnerSettingsWorkflow

logger = structlog.stdlib.get_logger("worker")
# A workflow task waiting on a worker that stopped answering (paused, say) goes to another
# worker after this long, instead of the SDK's 10 s.
STICKY_TIMEOUT = timedelta(seconds=2)


class Workers:
    """The Temporal workers of one process, started and stopped together: one on the main task
    queue (the workflows and the coordinators' activities) and one per agent this process has,
    on that agent's own task queue."""

    def __init__(self, workers: list[Worker]) -> None:
        self.workers = workers
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Workers:
        for worker in self.workers:
            await self._stack.enter_async_context(worker)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()


# The sandbox still refuses what a workflow must not call (the clock, randomness, I/O), but
# imports no module afresh per execution: that re-import cost each run about 0.1 s on 2 cores.
# Our workflow modules keep no state at module level (tests/test_replay.py replays them).
WORKFLOW_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_all_modules()
)


def build_workers(client: Client, settings: Settings, agents: AgentRegistry) -> Workers:
    """The workers every process of ours runs (tests build theirs here too)."""
    main = Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[AgentRunWorkflow, AgentScopeWorkflow, AgentRunnerSettingsWorkflow],
        activities=SCOPE_ACTIVITIES,
        sticky_queue_schedule_to_start_timeout=STICKY_TIMEOUT,
        workflow_runner=WORKFLOW_RUNNER,
        **_common(settings),
    )
    return Workers([main, *agent_workers(client, settings, agents)])


def agent_workers(client: Client, settings: Settings, agents: AgentRegistry) -> list[Worker]:
    """One worker per agent, on that agent's own task queue (a test serves agents alone with
    these, beside workflow workers of its own)."""
    deployment = None if settings.worker_any_deployment else settings.workflow_id
    run_agent = AgentActivities(agents, deployment).run_agent
    return [
        Worker(
            client,
            task_queue=agent_task_queue(settings.task_queue, name),
            activities=[run_agent],
            **_common(settings),
        )
        for name in agents
    ]


def _common(settings: Settings) -> dict[str, Any]:
    return {
        "graceful_shutdown_timeout": timedelta(seconds=settings.worker_graceful_shutdown_seconds),
    }


async def main(settings: Settings, agents: AgentRegistry | None = None) -> None:
    """Join the deployment, then serve its workflows and ``agents`` (by default the installed
    ones ``WORKER_AGENTS`` names) until SIGTERM or SIGINT."""
    if agents is None:
        agents = AgentRegistry.installed_or_exit(only=settings.worker_agents)
    interceptors, flush_traces = tracing_interceptors(settings, "worker")
    connector = Connector(
        settings, runtime=create_runtime(settings.worker_metrics_address), interceptors=interceptors
    )
    await connector.start()
    client = await connector.wait_connected()
    try:
        deployment = await join_deployment(client, settings, role="a worker")
    except DeploymentMismatchError as err:
        logger.error("deployment_mismatch", message=str(err))
        exit_now(2)
    workers = build_workers(client, settings, agents)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with workers:
        logger.info(
            "worker_start",
            task_queue=settings.task_queue,
            agents=list(agents),
            namespace=settings.temporal_namespace,
            temporal_address=settings.temporal_address,
            scope=deployment.scope_kind.value,
            slots=deployment.limits.slots,
        )
        await stop.wait()
        logger.info("worker_stopping", message="Stopped polling; waiting for running agents")
    logger.info("worker_stopped")
    flush_traces()


if __name__ == "__main__":
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(main(settings))
    exit_now(0)
    sys.exit(0)
