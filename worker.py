"""Wiring only: connect to Temporal and serve the agent workflow and activity.

Run any number of these; Temporal hands each run's agent to one of them. SIGTERM/SIGINT stop
polling, let a running agent finish (up to WORKER_GRACEFUL_SHUTDOWN_SECONDS), then exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Coroutine
from datetime import timedelta
from typing import Any

import structlog
from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities import AgentActivities
from activities.queue_ops import QueueActivities
from agent_runner.agent_registry import AgentRegistry
from agent_runner.connection import create_runtime
from agent_runner.connector import Connector
from agent_runner.lease import MAX_RENEW_SECONDS
from agent_runner.locations import agent_task_queue
from agent_runner.logs import configure_logging
from agent_runner.process import exit_now
from agent_runner.queue_types import QueueConfig
from agent_runner.runs.stuck import watch
from agent_runner.settings import Settings, get_settings
from agent_runner.tracing import tracing_interceptors
from workflows import AgentQueueWorkflow, AgentRunWorkflow

logger = structlog.stdlib.get_logger("worker")


class Workers:
    """The Temporal workers of one process, started and stopped together: one on the main task
    queue (the run and queue workflows, the queue's activities) and one per agent this process
    has, on that agent's own task queue."""

    def __init__(self, workers: list[Worker]) -> None:
        self.workers = workers
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Workers:
        for worker in self.workers:
            await self._stack.enter_async_context(worker)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()


def build_workers(client: Client, settings: Settings, agents: AgentRegistry) -> Workers:
    """The workers every process of ours runs (tests build theirs here too)."""
    queue = QueueActivities(settings.run_target(), queue_config(settings))
    common: dict[str, Any] = {
        "graceful_shutdown_timeout": timedelta(seconds=settings.worker_graceful_shutdown_seconds),
        # The SDK sends a heartbeat at most every 0.8 x heartbeat timeout by default: with 10 s
        # that is 8 s before a cancel reaches the agent. Send at least every half second.
        "max_heartbeat_throttle_interval": timedelta(seconds=MAX_RENEW_SECONDS),
        "default_heartbeat_throttle_interval": timedelta(seconds=MAX_RENEW_SECONDS),
    }
    main = Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[AgentRunWorkflow, AgentQueueWorkflow],
        activities=[queue.queue_config, queue.secure_slot, queue.claim_next, queue.watch_slot],
        # The tracing interceptor runs inside the workflow sandbox: let it import opentelemetry.
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules("opentelemetry")
        ),
        **common,
    )
    run_agent = AgentActivities(agents).run_agent
    per_agent = [
        Worker(
            client,
            task_queue=agent_task_queue(settings.task_queue, name),
            activities=[run_agent],
            **common,
        )
        for name in agents
    ]
    return Workers([main, *per_agent])


def queue_config(settings: Settings) -> QueueConfig:
    """What the queues learn of the deployment from the workers (workflow code cannot read
    settings): the API and the workers must agree on these."""
    return QueueConfig(
        slots=settings.agent_slots,
        queue_max=settings.agent_queue_max,
        task_queue=settings.task_queue,
        default_policy=settings.run_policy(),
    )


async def main(settings: Settings) -> None:
    agents = AgentRegistry.installed_or_exit(only=settings.worker_agents)
    interceptors, flush_traces = tracing_interceptors(settings, "worker")
    connector = Connector(
        settings, runtime=create_runtime(settings.worker_metrics_address), interceptors=interceptors
    )
    await connector.start()
    client = await connector.wait_connected()
    workers = build_workers(client, settings, agents)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    logger.info(
        "worker_start",
        task_queue=settings.task_queue,
        agents=list(agents),
        namespace=settings.temporal_namespace,
        temporal_address=settings.temporal_address,
    )
    stuck_after = timedelta(seconds=settings.run_stuck_after_seconds)
    worker_wait = timedelta(seconds=settings.run_worker_wait_seconds)
    watching = watch(
        client, settings.run_target(), stuck_after=stuck_after, worker_wait=worker_wait
    )
    async with workers, _background(watching):
        await stop.wait()
        logger.info("worker_stopping", message="Stopped polling; waiting for running agents")
    logger.info("worker_stopped")
    flush_traces()


@contextlib.asynccontextmanager
async def _background(work: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """Run ``work`` beside the body; cancel it when the body is done."""
    task = asyncio.ensure_future(work)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


if __name__ == "__main__":
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    # Our log lines carry the run's keys as fields; keep the workflow logger's message clean.
    workflow.logger.workflow_info_on_message = False
    asyncio.run(main(settings))
    exit_now(0)
