"""What one working agent costs the Temporal server: its frontend calls per second while the
agent works, ours against raw Temporal's heartbeating activity with the same heartbeat timeout.
Each side's window is measured alone, less an idle window of the same length (what the
processes ask with nothing running). The workers' own calls are left out: their task polls
(which wait, and cost nothing while they wait) and their liveness reports, the same whether an
agent works or not."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from typing import Any

import httpx

from bench.api_client import sleeper, start, status
from bench.context import Bench
from bench.executions import fresh_id, start_raw
from bench.measure import say
from bench.raw_worker import POLICY

# Calls of the workers themselves, the same whether an agent works or not: their task polls
# (long polls) and their own liveness reports.
WORKER_CALLS = {
    "PollWorkflowTaskQueue",
    "PollActivityTaskQueue",
    "PollNexusTaskQueue",
    "RecordWorkerHeartbeat",
}
_REQUESTS = re.compile(r"^service_requests\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def frontend_calls(metrics: str) -> Counter[str]:
    """Requests the server's frontend has taken, by operation, the workers' own left out."""
    calls: Counter[str] = Counter()
    for line in metrics.splitlines():
        found = _REQUESTS.match(line)
        if found is None:
            continue
        labels = dict(_LABEL.findall(found["labels"]))
        operation = labels.get("operation", "")
        if labels.get("service_name") == "frontend" and operation not in WORKER_CALLS:
            calls[operation] += round(float(found["value"]))
    return calls


async def _window(http: httpx.AsyncClient, url: str, seconds: float) -> Counter[str]:
    before = frontend_calls((await http.get(url)).text)
    await asyncio.sleep(seconds)
    after = frontend_calls((await http.get(url)).text)
    after.subtract(before)
    return after


def _per_second(window: Counter[str], idle: Counter[str], seconds: float) -> dict[str, Any]:
    extra = {op: (window[op] - idle[op]) / seconds for op in set(window) | set(idle)}
    shown = {op: round(value, 3) for op, value in sorted(extra.items()) if abs(value) >= 0.01}
    return {"calls_per_second": round(sum(extra.values()), 3), "by_operation": shown}


async def lease_cost(bench: Bench) -> dict[str, Any]:
    seconds = bench.sizes.lease_window_seconds
    agent_seconds = seconds + 15.0
    heartbeat = POLICY.heartbeat_timeout_seconds
    say(
        f"lease cost: one agent working, {seconds:g} s each side, heartbeat timeout {heartbeat:g} s"
    )
    metrics = bench.services.metrics_url
    url = bench.services["agents"].url
    raw_queue = bench.services["raw"].settings.task_queue
    async with httpx.AsyncClient(timeout=60) as http:
        run_id = await start(http, url, sleeper(agent_seconds))
        while (await status(http, url, run_id))["state"] != "RUNNING":
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.0)  # past the claim and the first lease confirmations
        ours = await _window(http, metrics, seconds)
        await http.post(f"{url}/agents/runs/{run_id}/cancel")

        handle = await start_raw(
            bench.client, raw_queue, fresh_id("bench-raw-lease"), agent_seconds
        )
        while not (await handle.describe()).raw_description.pending_activities:
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.0)
        raw = await _window(http, metrics, seconds)
        await handle.terminate("benchmark cleanup")
        # Last, so no process of either side is still starting up (their first calls).
        await asyncio.sleep(2.0)
        idle = await _window(http, metrics, seconds)
    return {
        "window_seconds": seconds,
        "heartbeat_timeout_seconds": heartbeat,
        "ours": _per_second(ours, idle, seconds),
        "raw_temporal": _per_second(raw, idle, seconds),
        "idle": _per_second(idle, Counter(), seconds),
    }
