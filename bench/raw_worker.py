"""The raw-Temporal baseline: what a user would write with Temporal out of the box.

A minimal workflow, :class:`RawAgentWorkflow`, runs one activity, :func:`raw_agent`, that sleeps
for the given time while heartbeating and returns ``"approved"``; it has a retry policy and a
heartbeat timeout like ours, and runs on a task queue of its own, as our agents do. None of our
code runs here: no slots, no queue, no lease, no progress signals, no memo. Every "raw Temporal"
figure of the benchmarks is ``execute_workflow`` / ``start_workflow`` against this worker, or
an update-with-start of :class:`RawQueueWorkflow`.

``python -m bench.raw_worker``: serves ``TASK_QUEUE`` (the workflow) and ``raw_agent_queue()``
of it (the activity) on ``TEMPORAL_ADDRESS`` until SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from temporalio.client import Client
    from temporalio.worker import Worker

    from agent_runner.contract import RunPolicy
    from agent_runner.process import exit_now
    from agent_runner.settings import Settings

# Our defaults, so both sides drive their agent with the same policy.
POLICY = RunPolicy()
HEARTBEAT_EVERY_SECONDS = 0.5


@dataclass(frozen=True)
class RawRun:
    duration_seconds: float


def raw_agent_queue(task_queue: str) -> str:
    return f"{task_queue}.agent"


@activity.defn
async def raw_agent(run: RawRun) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + run.duration_seconds
    while (remaining := deadline - loop.time()) > 0:
        activity.heartbeat()
        await asyncio.sleep(min(remaining, HEARTBEAT_EVERY_SECONDS))
    return "approved"


@workflow.defn
class RawAgentWorkflow:
    @workflow.run
    async def run(self, run: RawRun) -> str:
        heartbeat_timeout = timedelta(seconds=POLICY.heartbeat_timeout_seconds)
        return await workflow.execute_activity(
            raw_agent,
            run,
            task_queue=raw_agent_queue(workflow.info().task_queue),
            start_to_close_timeout=timedelta(seconds=POLICY.timeout_seconds) + heartbeat_timeout,
            heartbeat_timeout=heartbeat_timeout,
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=POLICY.retry_initial_interval_seconds),
                maximum_attempts=POLICY.max_attempts,
            ),
        )


@workflow.defn
class RawQueueWorkflow:
    """A queue with Temporal alone: an update appends items and answers their places. The
    floor of any durable enqueue (one update-with-start, one workflow task on a worker)."""

    def __init__(self) -> None:
        self.items: list[str] = []

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)  # the benchmark terminates it

    @workflow.update
    def enqueue(self, items: list[str]) -> list[int]:
        first = len(self.items) + 1
        self.items += items
        return list(range(first, first + len(items)))


async def main(settings: Settings) -> None:
    client = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    workflows = Worker(
        client, task_queue=settings.task_queue, workflows=[RawAgentWorkflow, RawQueueWorkflow]
    )
    activities = Worker(
        client, task_queue=raw_agent_queue(settings.task_queue), activities=[raw_agent]
    )
    async with workflows, activities:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(Settings()))
    exit_now(0)
