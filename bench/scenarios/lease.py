"""What one working agent costs the Temporal server: its frontend calls per second while the
agent works, ours against raw Temporal's heartbeating activity with the same heartbeat timeout.
Each side's window is measured alone, less the mean of the idle windows before and after it
(what the processes ask with nothing running). Only the workers' liveness reports are left out,
the same whether an agent works or not; task polls count (see WORKER_CALLS)."""

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

# Each worker process's own liveness report, periodic and the same whether an agent works or
# not. Task polls are counted: a poll that returns a task is work the agent caused, and idle
# polls cancel out against the idle windows.
WORKER_CALLS = {"RecordWorkerHeartbeat"}
HEARTBEAT = "RecordActivityTaskHeartbeat"
# After a side's run ends, until its last calls are in: our slot's drain (a lease) and the raw
# activity's last throttled heartbeat (0.8 of the heartbeat timeout).
SETTLE_SECONDS = 12.0
_REQUESTS = re.compile(r"^service_requests\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def frontend_calls(metrics: str) -> Counter[str]:
    """Requests the server's frontend has taken for the default namespace (the one every
    deployment here uses), by operation, the workers' liveness reports left out."""
    calls: Counter[str] = Counter()
    for line in metrics.splitlines():
        found = _REQUESTS.match(line)
        if found is None:
            continue
        labels = dict(_LABEL.findall(found["labels"]))
        operation = labels.get("operation", "")
        if (
            labels.get("service_name") == "frontend"
            and labels.get("namespace") == "default"
            and operation not in WORKER_CALLS
        ):
            calls[operation] += round(float(found["value"]))
    return calls


async def calls_in_window(http: httpx.AsyncClient, url: str, seconds: float) -> Counter[str]:
    """The frontend calls taken in the next ``seconds``, by operation."""
    before = frontend_calls((await http.get(url)).text)
    await asyncio.sleep(seconds)
    after = frontend_calls((await http.get(url)).text)
    after.subtract(before)
    return after


def per_second(window: Counter[str], idle: Counter[str], seconds: float) -> dict[str, Any]:
    extra = {op: (window[op] - idle[op]) / seconds for op in set(window) | set(idle)}
    shown = {op: round(value, 3) for op, value in sorted(extra.items()) if abs(value) >= 0.01}
    return {
        "calls_per_second": round(sum(extra.values()), 3),
        "heartbeats": window[HEARTBEAT],
        "by_operation": shown,
    }


def _mean(first: Counter[str], second: Counter[str]) -> Counter[str]:
    both = first + second
    return Counter({op: count / 2 for op, count in both.items()})


async def lease_cost(bench: Bench) -> dict[str, Any]:
    """Idle, ours, idle, raw, idle: each working window between two idle ones, whose mean is
    subtracted. The window should span several renewals of each side (ours every 4.5 s, raw
    every 8 s at a 10 s heartbeat timeout): 72 s is a multiple of both."""
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
        idle_before = await calls_in_window(http, metrics, seconds)

        run_id = await start(http, url, sleeper(agent_seconds))
        while (await status(http, url, run_id))["state"] != "RUNNING":
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.0)  # past the claim and the first lease confirmations
        ours = await calls_in_window(http, metrics, seconds)
        await http.post(f"{url}/agents/runs/{run_id}/cancel")
        await asyncio.sleep(min(SETTLE_SECONDS, seconds))
        idle_between = await calls_in_window(http, metrics, seconds)

        handle = await start_raw(
            bench.client, raw_queue, fresh_id("bench-raw-lease"), agent_seconds
        )
        while not (await handle.describe()).raw_description.pending_activities:
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.0)
        raw = await calls_in_window(http, metrics, seconds)
        await handle.terminate("benchmark cleanup")
        await asyncio.sleep(min(SETTLE_SECONDS, seconds))
        idle_after = await calls_in_window(http, metrics, seconds)
    return {
        "window_seconds": seconds,
        "heartbeat_timeout_seconds": heartbeat,
        "ours": per_second(ours, _mean(idle_before, idle_between), seconds),
        "raw_temporal": per_second(raw, _mean(idle_between, idle_after), seconds),
        "idle": per_second(idle_between, Counter(), seconds),
    }
