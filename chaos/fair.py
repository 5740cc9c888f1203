"""The fair-shares phases' own clients: while a phase is on (the limits changer turns fair
shares on with :data:`WEIGHTS`, :mod:`chaos.limiter`), one feeder per fairness key keeps that
key backlogged, so the checker can judge the shares the two keys got (:mod:`chaos.check_fair`).

The rule: a feeder keeps :data:`BACKLOG` of its key's runs waiting (it reads the oldest it knows;
once that one is no longer queued it starts more). Its runs are plain ``enqueue`` starts of priority
:data:`PRIORITY`, with an Idempotency-Key (a start that got a 503 or no answer is retried with its
key, so a run whose answer was lost is named by a retry's), no queue timeout, no params, and a user
of their own (``attach`` never matches them); the feeders share nothing with the other clients, so
no client cancels or reads them. Priority 1 because a grant of another priority moves the
round-robin's clock for every key (workflows/scope_book.py ``_take_turn``): the phase's runs are
outranked only by a ``replace``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass, field
from typing import Any

from chaos.calls import Calls
from chaos.facts import accepted_id, state_of

HEAVY, LIGHT = "fair-a", "fair-b"
WEIGHTS = {HEAVY: 3, LIGHT: 1}
BACKLOG = {HEAVY: 8, LIGHT: 4}
PRIORITY = 1
# The queue's size while a phase is on: the runs of lower priorities wait meanwhile.
QUEUE_MAX = 200
RETRIES_OF_A_START = 3


class FairPhase:
    """Whether a fair-shares phase is on (set by the limits changer once fair shares are)."""

    def __init__(self) -> None:
        self.on = asyncio.Event()


@dataclass
class Feeder:
    key: str
    calls: Calls
    rng: random.Random
    agent_type: str
    user_id: str
    seed: int
    # Its runs it knows to wait, oldest first.
    waiting: list[str] = field(default_factory=list)
    _keys_made: int = 0

    @property
    def name(self) -> str:
        return self.key

    def _api(self) -> int:
        return self.rng.randrange(len(self.calls.urls))

    def body(self) -> dict[str, Any]:
        return {
            "agent_type": self.agent_type,
            "user_id": self.user_id,
            "on_busy": "enqueue",
            "priority": PRIORITY,
            "fairness_key": self.key,
        }

    async def start(self) -> None:
        self._keys_made += 1
        key = f"chaos-{self.seed}-{self.key}-{self._keys_made}"
        for _ in range(1 + RETRIES_OF_A_START):
            op = await self.calls.start(self.name, "chaos", self._api(), self.body(), key)
            run_id = accepted_id(op)
            if run_id is not None:
                if isinstance(op.body, dict) and op.body.get("queue_position"):
                    self.waiting.append(run_id)
                return
            if op.status != 503 and op.error is None:
                return
            await asyncio.sleep(self.rng.uniform(0.2, 1.0))

    async def still_waits(self, run_id: str) -> bool | None:
        """Whether the run is still queued; None when no answer said."""
        op = await self.calls.status(self.name, "chaos", self._api(), run_id)
        if op.status == 404:
            return False
        if op.status != 200 or not isinstance(op.body, dict):
            return None
        return state_of(op) == "PENDING" and bool(op.body.get("queue_position"))

    async def run(self, stop: asyncio.Event, phase: FairPhase) -> None:
        while not stop.is_set():
            if not phase.on.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
                continue
            for _ in range(BACKLOG[self.key] - len(self.waiting)):
                await self.start()
            while self.waiting:
                queued = await self.still_waits(self.waiting[0])
                if queued is not False:
                    break
                self.waiting.pop(0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.rng.uniform(0.3, 0.7))
