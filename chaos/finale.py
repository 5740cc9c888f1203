"""The end of a run, once everything is healed: read every accepted run until it is DONE or
ERROR, then probe liveness (a new run in every scope used must get a slot and finish).

The rule: no fixed wait. Reads go on while runs keep finishing and stop only after
``stall_seconds`` without any run finishing (or at ``cap_seconds``): a slow machine gets the
time it needs, a stuck queue does not hang the run. A run read ``NOT_FOUND_ROUNDS`` times in a
row as 404 (everything healed: the deployment has no such run) is read no more. Every request is
in the history.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from chaos.calls import Calls
from chaos.facts import FINAL_STATES, state_of
from chaos.history import Op, Phase

STALL_SECONDS = 120.0
CAP_SECONDS = 900.0
PROBE_START_SECONDS = 90.0
READS_AT_ONCE = 16
NOT_FOUND_ROUNDS = 3


async def read_until_final(
    calls: Calls,
    run_ids: Sequence[str],
    phase: Phase,
    stall_seconds: float = STALL_SECONDS,
    cap_seconds: float = CAP_SECONDS,
) -> dict[str, str | None]:
    """Each run's last state read; all DONE or ERROR unless some stalled."""
    last: dict[str, str | None] = dict.fromkeys(run_ids)
    missing: dict[str, int] = dict.fromkeys(run_ids, 0)
    pending = list(run_ids)
    gate = asyncio.Semaphore(READS_AT_ONCE)
    began = progressed = time.monotonic()
    rounds = 0

    async def read(number: int, run_id: str) -> Op:
        async with gate:
            return await calls.status("finale", phase, number % len(calls.urls), run_id)

    while pending:
        ops = await asyncio.gather(*(read(rounds + n, r) for n, r in enumerate(pending)))
        rounds += 1
        for run_id, op in zip(pending, ops, strict=True):
            if op.status == 200:
                last[run_id] = state_of(op)
            missing[run_id] = missing[run_id] + 1 if op.status == 404 else 0
        finished = [
            run_id
            for run_id in pending
            if last[run_id] in FINAL_STATES or missing[run_id] >= NOT_FOUND_ROUNDS
        ]
        if finished:
            progressed = time.monotonic()
        pending = [run_id for run_id in pending if run_id not in finished]
        now = time.monotonic()
        if now - progressed > stall_seconds or now - began > cap_seconds:
            break
        if pending:
            await asyncio.sleep(min(3.0, 0.5 * rounds))
    return last


async def probe(calls: Calls, body: dict[str, str], key: str) -> str | None:
    """Start one run (enqueue, with a key, retried until accepted) and follow it to its end;
    its run id, or None if no start was accepted in time."""
    deadline = time.monotonic() + PROBE_START_SECONDS
    run_id: str | None = None
    attempt = 0
    while run_id is None and time.monotonic() < deadline:
        op = await calls.start("probe", "probe", attempt % len(calls.urls), body, key)
        attempt += 1
        if op.status == 202 and isinstance(op.body, dict):
            run_id = str(op.body["run_id"])
        else:
            await asyncio.sleep(1.0)
    if run_id is not None:
        await read_until_final(calls, [run_id], "probe")
    return run_id
