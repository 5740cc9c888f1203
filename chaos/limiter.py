"""The limits changer: an operator who changes N under the nemesis's faults, through the API
(``PUT /agents/limits``), and puts it back at the end.

The rule: with ``--slots`` N > 1, every ``GAP_SECONDS`` or so (drawn from its own generator) it
sets N to a random value from 1 to N on a random API, each change recorded as a ``limits`` op
with its send and answer times (:mod:`chaos.limits` says what the checker makes of them); once
the clients have stopped and the stack is healed, :meth:`LimitsChanger.restore` sets N back to
the run's own, retried until an API answers 200, so the finale and the probes run under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

from chaos.calls import Calls

GAP_SECONDS = (5.0, 25.0)
RESTORE_SECONDS = 120.0


class LimitsChanger:
    def __init__(
        self,
        calls: Calls,
        rng: random.Random,
        slots: int,
        gap_seconds: tuple[float, float] = GAP_SECONDS,
    ) -> None:
        self.calls = calls
        self.rng = rng
        self.slots = slots
        self.gap_seconds = gap_seconds

    async def run(self, stop: asyncio.Event) -> None:
        """Change N now and then until ``stop`` is set (nothing to do with one slot)."""
        if self.slots < 2:
            return
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.rng.uniform(*self.gap_seconds))
            if stop.is_set():
                return
            api = self.rng.randrange(len(self.calls.urls))
            await self.calls.limits("limits", "chaos", api, self.rng.randint(1, self.slots))

    async def restore(self) -> bool:
        """Set N back to the run's own; whether an API said it did."""
        if self.slots < 2:
            return True
        deadline = time.monotonic() + RESTORE_SECONDS
        attempt = 0
        while time.monotonic() < deadline:
            api = attempt % len(self.calls.urls)
            op = await self.calls.limits("limits", "final", api, self.slots)
            if op.status == 200:
                return True
            attempt += 1
            await asyncio.sleep(1.0)
        return False
