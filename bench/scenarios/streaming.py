"""Issue 13: following a run. How soon a subscriber of the event stream sees an agent's
progress report, and how long POST→DONE takes for a client that streams and for one that
long-polls, against the raw worker's start→result."""

from __future__ import annotations

from typing import Any

import httpx

from bench.agents import reported_at
from bench.api_client import run_and_long_poll, run_and_stream, sleeper, start, stream_to_end
from bench.context import Bench
from bench.executions import execute_raw
from bench.measure import say, summary, timed_rounds
from devtools.processes import EXAMPLE_USER_ID

AGENT_SECONDS = 0.2
RAW_ID = "bench-raw-streaming"


async def progress_latency(bench: Bench) -> dict[str, Any]:
    """A run of the ticker agent (bench/agents.py), whose every progress message names the
    wall-clock instant it was reported; one subscriber notes when it reads each on the stream
    (same machine, same clock)."""
    reports = bench.sizes.progress_reports
    say(f"progress report → stream subscriber: {reports} reports")
    url = bench.services["agents"].url
    latencies: list[float] = []

    def on_event(name: str, status: dict[str, Any], received: float) -> None:
        progress = status.get("progress")
        if name == "progress" and progress:
            reported = reported_at(progress["message"])
            if reported is not None:
                latencies.append(received - reported)

    body = {
        "agent_type": "bench-ticker",
        "user_id": EXAMPLE_USER_ID,
        "params": {"reports": reports},
    }
    async with httpx.AsyncClient(timeout=60) as http:
        run_id = await start(http, url, body)
        final = await stream_to_end(http, url, run_id, on_event)
    assert final["state"] == "DONE", final
    return {**summary(latencies), "reports": len(final["result"]), "seen": len(latencies)}


async def post_to_done(bench: Bench) -> dict[str, Any]:
    """A 0.2 s agent on a worker process of its own: POST, then the event stream until
    ``done``; POST, then long polls until DONE; raw ``execute_workflow`` of a 0.2 s activity.
    Interleaved, one run at a time."""
    runs = bench.sizes.runs
    say(f"POST→DONE, {AGENT_SECONDS:g} s agent: {runs} runs per client")
    url, raw_queue = bench.services["agents"].url, bench.services["raw"].settings.task_queue
    body = sleeper(AGENT_SECONDS)
    async with httpx.AsyncClient(timeout=60) as http:

        async def streaming() -> None:
            await run_and_stream(http, url, body)

        async def long_polling() -> None:
            await run_and_long_poll(http, url, body)

        async def raw() -> None:
            await execute_raw(bench.client, raw_queue, RAW_ID, AGENT_SECONDS)

        steps = {"streaming": streaming, "long_polling": long_polling, "raw": raw}
        for step in steps.values():
            await step()  # warm-up
        durations = await timed_rounds(runs, steps, "POST→DONE")
    return {
        "streaming": summary(durations["streaming"]),
        "long_polling": summary(durations["long_polling"]),
        "raw_temporal": summary(durations["raw"]),
        "agent_seconds": AGENT_SECONDS,
    }
