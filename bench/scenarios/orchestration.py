"""What orchestration through our API costs on top of Temporal: one run at a time, agent
duration 0, so the time is all orchestration. Baseline: the raw worker (bench/raw_worker.py)."""

from __future__ import annotations

import statistics
import time
from typing import Any

import httpx

from bench.api_client import POLICY_CHECKER, run_and_long_poll, status
from bench.context import Bench
from bench.executions import LEGS, execute_raw, legs, start_raw
from bench.measure import ms, say, summary, timed_rounds

RAW_ID = "bench-raw-overhead"


async def overhead(bench: Bench) -> dict[str, Any]:
    """POST, then long-poll the status until DONE, vs ``execute_workflow`` (start, result); and
    where the time goes, leg by leg, read from each run's history."""
    runs = bench.sizes.runs
    say(f"overhead: {runs} runs each, agent duration 0")
    url, raw_queue = bench.services["fast"].url, bench.services["raw"].settings.task_queue
    ours_runs: list[tuple[str, float, float]] = []
    raw_runs: list[tuple[str, float, float]] = []
    async with httpx.AsyncClient(timeout=60) as http:

        async def ours() -> None:
            asked = time.time()
            run_id = await run_and_long_poll(http, url, POLICY_CHECKER)
            ours_runs.append((run_id, asked, time.time()))

        async def raw() -> None:
            asked = time.time()
            handle = await start_raw(bench.client, raw_queue, RAW_ID, 0.0)
            await handle.result()
            assert handle.result_run_id is not None
            raw_runs.append((handle.result_run_id, asked, time.time()))

        await ours()  # warm-up: the first of each side waits for its worker's first poll
        await raw()
        del ours_runs[:], raw_runs[:]
        durations = await timed_rounds(runs, {"ours": ours, "raw": raw}, "overhead")
        ours_legs = []
        for run_id, asked, done in ours_runs:
            body = await status(http, url, run_id)
            execution = body["workflow_id"], body["temporal_run_id"]
            ours_legs.append(await legs(bench.client, *execution, asked, done))
    raw_legs = [
        await legs(bench.client, RAW_ID, run_id, asked, done) for run_id, asked, done in raw_runs
    ]
    return {
        "ours": summary(durations["ours"]),
        "raw_temporal": summary(durations["raw"]),
        "legs": {
            name: {
                "ours_p50_ms": ms(statistics.median(leg[name] for leg in ours_legs)),
                "raw_p50_ms": ms(statistics.median(leg[name] for leg in raw_legs)),
            }
            for name in LEGS
        },
    }


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
