"""Issue 9: a burst of concurrent starts on one slot while it is free. Exactly one is accepted;
the figure is how long the others wait for their answer (409)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from bench.api_client import POLICY_CHECKER, cancel, wait_idle
from bench.context import Bench
from bench.executions import fresh_id, raw_start_burst
from bench.measure import burst_summary, http_burst, say, summary

# Measured at commit 1dc48d9 (before issue 9), same machine, same benchmark.
BEFORE = Path(__file__).resolve().parent.parent / "results" / "before-issue-9.json"
# Long enough to hold the slot through the burst; ended right after.
HOLD_SECONDS = 600.0


async def burst(bench: Bench) -> dict[str, Any]:
    """``size`` POSTs at once to our API (10-minute agents) vs ``size`` ``start_workflow`` calls
    on one fixed workflow id against the raw worker."""
    size = bench.sizes.burst
    say(f"burst: {size} concurrent starts on one free slot")
    slow = bench.services["slow"]
    async with httpx.AsyncClient(timeout=60) as http:
        await wait_idle(http, slow.url)
        answers = await http_burst(slow.settings.api_port, "/agents/run", [POLICY_CHECKER] * size)
        for answer in answers:
            if answer.status == 202:
                await cancel(http, slow.url, answer.body["run_id"])
        await wait_idle(http, slow.url)

    raw_id = fresh_id("bench-raw-burst")
    raw_queue = bench.services["raw"].settings.task_queue
    raw = await raw_start_burst(bench.client, raw_queue, [raw_id] * size, HOLD_SECONDS)
    await bench.client.get_workflow_handle(raw_id).terminate("benchmark cleanup")
    return {
        "ours": burst_summary(answers),
        "raw_temporal": {
            **summary([seconds for _, seconds in raw]),
            "accepted": sum(1 for accepted, _ in raw if accepted),
        },
        "before": json.loads(BEFORE.read_text()),
    }
