"""What orchestration through our API costs on top of Temporal: one run at a time, agent
duration 0, so the time is all orchestration. Baseline: the raw worker (bench/raw_worker.py)."""

from __future__ import annotations

import time
from typing import Any

import httpx

from bench.api_client import POLICY_CHECKER, run_and_long_poll
from bench.context import Bench
from bench.executions import execute_raw
from bench.measure import say, summary, timed_rounds

RAW_ID = "bench-raw-overhead"


async def overhead(bench: Bench) -> dict[str, Any]:
    """POST, then long-poll the status until DONE, vs ``execute_workflow`` (start, result)."""
    runs = bench.sizes.runs
    say(f"overhead: {runs} runs each, agent duration 0")
    url, raw_queue = bench.services["fast"].url, bench.services["raw"].settings.task_queue
    async with httpx.AsyncClient(timeout=60) as http:

        async def ours() -> None:
            await run_and_long_poll(http, url, POLICY_CHECKER)

        async def raw() -> None:
            await execute_raw(bench.client, raw_queue, RAW_ID, 0.0)

        await ours()  # warm-up: the first of each side waits for its worker's first poll
        await raw()
        durations = await timed_rounds(runs, {"ours": ours, "raw": raw}, "overhead")
    return {"ours": summary(durations["ours"]), "raw_temporal": summary(durations["raw"])}


async def throughput(bench: Bench) -> dict[str, Any]:
    """Runs per minute, one after another, each side alone."""
    runs = bench.sizes.throughput_runs
    say(f"back-to-back throughput: {runs} runs each, agent duration 0")
    url, raw_queue = bench.services["fast"].url, bench.services["raw"].settings.task_queue
    async with httpx.AsyncClient(timeout=60) as http:
        started = time.perf_counter()
        for _ in range(runs):
            await run_and_long_poll(http, url, POLICY_CHECKER)
        ours = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(runs):
        await execute_raw(bench.client, raw_queue, RAW_ID, 0.0)
    raw = time.perf_counter() - started
    return {
        "ours": {"runs_per_minute": round(runs / ours * 60, 1), "n": runs},
        "raw_temporal": {"runs_per_minute": round(runs / raw * 60, 1), "n": runs},
    }
