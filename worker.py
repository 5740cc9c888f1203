"""Wiring only: connect to Temporal and serve the agent workflow and activity.

Run any number of these; Temporal hands each run's agent to one of them. SIGTERM/SIGINT stop
polling, let a running agent finish (up to WORKER_GRACEFUL_SHUTDOWN_SECONDS), then exit.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from datetime import timedelta

import structlog
from temporalio import workflow
from temporalio.client import Client, Interceptor
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities import AGENTS, AgentActivities
from agent_runner.connection import connect, create_runtime
from agent_runner.logs import configure_logging
from agent_runner.process import exit_now
from agent_runner.settings import Settings, get_settings
from agent_runner.tracing import tracing_interceptors
from workflows import AgentRunWorkflow

logger = structlog.stdlib.get_logger("worker")
CONNECT_RETRY_SECONDS = 2.0


async def connect_with_retry(settings: Settings, interceptors: Sequence[Interceptor]) -> Client:
    """Wait for the server rather than exit: workers may start before Temporal does."""
    runtime = create_runtime(settings.worker_metrics_address)
    while True:
        try:
            return await connect(settings, runtime=runtime, interceptors=interceptors)
        except RuntimeError as err:
            logger.warning(
                "temporal_unreachable",
                temporal_address=settings.temporal_address,
                error=str(err),
                retry_in_seconds=CONNECT_RETRY_SECONDS,
            )
            await asyncio.sleep(CONNECT_RETRY_SECONDS)


async def main(settings: Settings) -> None:
    interceptors, flush_traces = tracing_interceptors(settings, "worker")
    client = await connect_with_retry(settings, interceptors)
    activities = AgentActivities(AGENTS, settings.agent_duration_seconds)
    worker = Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[AgentRunWorkflow],
        activities=[activities.run_agent],
        graceful_shutdown_timeout=timedelta(seconds=settings.worker_graceful_shutdown_seconds),
        # The tracing interceptor runs inside the workflow sandbox: let it import opentelemetry.
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules("opentelemetry")
        ),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    logger.info(
        "worker_start",
        task_queue=settings.task_queue,
        namespace=settings.temporal_namespace,
        temporal_address=settings.temporal_address,
    )
    async with worker:
        await stop.wait()
        logger.info("worker_stopping", message="Stopped polling; waiting for running agents")
    logger.info("worker_stopped")
    flush_traces()


if __name__ == "__main__":
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    # Our log lines carry the run's keys as fields; keep the workflow logger's message clean.
    workflow.logger.workflow_info_on_message = False
    asyncio.run(main(settings))
    exit_now(0)
