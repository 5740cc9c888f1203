"""Status reads under load: ``wrk`` against one run's ``GET /agents/status/{id}``, ours and the
in-memory design's, for a finished run and for a running one."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from bench.api_client import (
    POLICY_CHECKER,
    cancel,
    run_and_long_poll,
    start,
    status,
    wait_running,
)
from bench.context import Bench
from bench.measure import say, wrk

# Our API serves an open run it watches from memory; the first read starts the watcher.
WATCHER_WARM_UP_SECONDS = 1.0


def _wrk_each(bench: Bench, targets: dict[str, str]) -> dict[str, Any]:
    sizes = bench.sizes
    results = {}
    for name, url in targets.items():
        say(f"  wrk {name}")
        results[name] = wrk(url, sizes.wrk_seconds, sizes.connections)
    return results


async def finished(bench: Bench) -> dict[str, Any]:
    """A finished run: ours with its status cache, ours without, the in-memory app's."""
    say(f"status reads, finished run: wrk, {bench.sizes.connections} connections")
    fast, uncached = bench.services["fast"].url, bench.services["uncached"].url
    memory = bench.services["inmemory"].url
    async with httpx.AsyncClient(timeout=60) as http:
        ours = await run_and_long_poll(http, fast, POLICY_CHECKER)
        ours_uncached = await run_and_long_poll(http, uncached, POLICY_CHECKER)
        in_memory = await start(http, memory, POLICY_CHECKER)
        while (await status(http, memory, in_memory))["state"] != "DONE":
            await asyncio.sleep(0.05)
    return _wrk_each(
        bench,
        {
            "ours_finished": f"{fast}/agents/status/{ours}",
            "ours_finished_without_cache": f"{uncached}/agents/status/{ours_uncached}",
            "inmemory_finished": f"{memory}/agents/status/{in_memory}",
        },
    )


async def running(bench: Bench) -> dict[str, Any]:
    """A running run (10-minute agents), read once first so our API watches it."""
    say(f"status reads, running run: wrk, {bench.sizes.connections} connections")
    slow, memory = bench.services["slow"].url, bench.services["inmemory"].url
    async with httpx.AsyncClient(timeout=60) as http:
        ours = await start(http, slow, POLICY_CHECKER)
        await wait_running(http, slow, ours)
        in_memory = await start(http, memory, {**POLICY_CHECKER, "duration_seconds": 600})
        await wait_running(http, memory, in_memory)
        await asyncio.sleep(WATCHER_WARM_UP_SECONDS)
        results = _wrk_each(
            bench,
            {
                "ours_running": f"{slow}/agents/status/{ours}",
                "inmemory_running": f"{memory}/agents/status/{in_memory}",
            },
        )
        await cancel(http, slow, ours)
    return results
