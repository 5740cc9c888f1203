"""Issue 12: the queue (``"on_busy": "enqueue"``). How long a slot stands idle when it passes
from one queued run to the next, and what enqueueing costs a start's answer."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from bench.api_client import cancel, long_poll_to_end, sleeper, status, wait_idle
from bench.context import Bench
from bench.executions import (
    Execution,
    execution_times,
    raw_enqueue,
    start_raw,
)
from bench.measure import burst_summary, http_burst, say, summary

SHORT_AGENT_SECONDS = 0.1
# Long enough to hold the slot through a burst; the runs are ended right after.
HOLD_SECONDS = 600.0
RAW_ID = "bench-raw-queue"
# Update-with-start calls timed for the raw enqueue floor.
RAW_ENQUEUES = 10


def _gaps(ends: list[datetime], starts: list[datetime]) -> list[float]:
    """Seconds from each end to the next run's start (``starts[0]`` is the first run's)."""
    return [(start - end).total_seconds() for end, start in zip(ends, starts[1:], strict=False)]


async def handoff(bench: Bench) -> dict[str, Any]:
    """``queue_runs`` runs of a short agent posted at once: one takes the slot, the rest queue
    and each gets the slot when the one before ends. Gap: a run's ``finished_at`` to the next
    one's ``started_at`` (GET /agents/status), and the agent's end to the next agent's start
    (activity events in the slot executions' histories). Raw: ``execute_workflow`` back to
    back on one workflow id, the same gaps from its executions."""
    count = bench.sizes.queue_runs
    say(f"queue hand-off: {count} runs of a {SHORT_AGENT_SECONDS:g} s agent through one queue")
    agents = bench.services["agents"]
    body = sleeper(SHORT_AGENT_SECONDS, on_busy="enqueue")
    answers = await http_burst(agents.settings.api_port, "/agents/run", [body] * count)
    assert {answer.status for answer in answers} == {202}, answers
    async with httpx.AsyncClient(timeout=60) as http:
        statuses = []
        for answer in answers:
            await long_poll_to_end(http, agents.url, answer.body["run_id"])
            statuses.append(await status(http, agents.url, answer.body["run_id"]))
    statuses.sort(key=lambda run: run["started_at"])
    ours = [
        await execution_times(bench.client, run["workflow_id"], run["temporal_run_id"])
        for run in statuses
    ]
    raw = await _raw_back_to_back(bench, count)
    finished, started = _at(statuses, "finished_at"), _at(statuses, "started_at")
    return {
        "ours": summary(_gaps(finished, started)),
        "raw_temporal": summary(_gaps([e.closed for e in raw], [e.started for e in raw])),
        "ours_agent": summary(_agent_gaps(ours)),
        "raw_agent": summary(_agent_gaps(raw)),
        "runs": count,
        "agent_seconds": SHORT_AGENT_SECONDS,
    }


def _at(statuses: list[dict[str, Any]], key: str) -> list[datetime]:
    return [datetime.fromisoformat(run[key]) for run in statuses]


def _agent_gaps(executions: list[Execution]) -> list[float]:
    return _gaps([e.agent_ended for e in executions], [e.agent_started for e in executions])


async def _raw_back_to_back(bench: Bench, count: int) -> list[Execution]:
    raw_queue = bench.services["raw"].settings.task_queue
    executions = []
    for _ in range(count):
        handle = await start_raw(bench.client, raw_queue, RAW_ID, SHORT_AGENT_SECONDS)
        await handle.result()
        assert handle.result_run_id is not None
        executions.append(await execution_times(bench.client, RAW_ID, handle.result_run_id))
    return executions


async def enqueue_answers(bench: Bench) -> dict[str, Any]:
    """``enqueue_burst`` POSTs at once on a free slot, twice: ``"on_busy": "reject"`` (one 202,
    the rest 409) and ``"on_busy": "enqueue"`` (one 202 that starts, the rest 202 queued); and
    the raw floor of a durable enqueue, one update-with-start of a plain Temporal queue."""
    size = bench.sizes.enqueue_burst
    say(f"enqueue vs reject answers: {size} concurrent starts each")
    agents = bench.services["agents"]
    port = agents.settings.api_port
    async with httpx.AsyncClient(timeout=60) as http:
        await wait_idle(http, agents.url)
        rejected = await http_burst(port, "/agents/run", [sleeper(HOLD_SECONDS)] * size)
        for answer in rejected:
            if answer.status == 202:
                await cancel(http, agents.url, answer.body["run_id"])
        await wait_idle(http, agents.url)
        queued = await http_burst(
            port, "/agents/run", [sleeper(HOLD_SECONDS, on_busy="enqueue")] * size
        )
        for answer in queued:
            await cancel(http, agents.url, answer.body["run_id"])
        await wait_idle(http, agents.url)
    # The engine's floor for what the queued ones needed after their refused start: one
    # update-with-start creating a queue and putting them in it.
    raw_queue = bench.services["raw"].settings.task_queue
    items = [f"run-{i}" for i in range(size - 1)]
    floor = [await raw_enqueue(bench.client, raw_queue, items) for _ in range(RAW_ENQUEUES)]
    return {
        "enqueue": burst_summary(queued),
        "reject": burst_summary(rejected),
        "raw_update_with_start": summary(floor),
    }
