"""Issue 12: ``AGENT_SCOPE=user_id``, one slot per user. Many users starting at once must all
be accepted, as fast as Temporal starts as many workflows; one user starting many times at once
gets exactly one run."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from bench.api_client import cancel, run_and_long_poll, sleeper
from bench.context import Bench
from bench.executions import fresh_id, raw_start_burst, wait_drained
from bench.measure import burst_summary, http_burst, say, summary

# Long enough to hold the user's slot through the burst; cancelled right after.
HOLD_SECONDS = 600.0


async def many_users(bench: Bench) -> dict[str, Any]:
    """``users`` POSTs at once, each for another user (agent duration 0), vs as many raw
    ``start_workflow`` calls on distinct workflow ids. Each side's runs finish before the
    other side starts."""
    size = bench.sizes.users
    say(f"user scope: {size} users start at once")
    users = bench.services["users"]
    async with httpx.AsyncClient(timeout=60) as http:
        await run_and_long_poll(http, users.url, sleeper(0, user_id=str(uuid.uuid4())))  # warm-up
    bodies = [sleeper(0, user_id=str(uuid.uuid4())) for _ in range(size)]
    ours = await http_burst(users.settings.api_port, "/agents/run", bodies)
    await wait_drained(bench.client, users.settings.task_queue)

    raw_queue = bench.services["raw"].settings.task_queue
    ids = [fresh_id("bench-raw-user") for _ in range(size)]
    raw = await raw_start_burst(bench.client, raw_queue, ids, 0.0)
    await wait_drained(bench.client, raw_queue)
    return {
        "ours": burst_summary(ours),
        "raw_temporal": {
            **summary([seconds for _, seconds in raw]),
            "accepted": sum(1 for accepted, _ in raw if accepted),
        },
    }


async def one_user(bench: Bench) -> dict[str, Any]:
    """``one_user_starts`` POSTs at once for one user: exactly one may be accepted."""
    size = bench.sizes.one_user_starts
    say(f"user scope: {size} starts at once for one user")
    users = bench.services["users"]
    body = sleeper(HOLD_SECONDS, user_id=str(uuid.uuid4()))
    answers = await http_burst(users.settings.api_port, "/agents/run", [body] * size)
    async with httpx.AsyncClient(timeout=60) as http:
        for answer in answers:
            if answer.status == 202:
                await cancel(http, users.url, answer.body["run_id"])
    return burst_summary(answers)
