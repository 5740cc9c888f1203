"""The nemesis: strikes the stack as the schedule says, and records every fault.

The rule: at most ``max_at_once`` faults at a time, never two on one target; each fault's record
runs from just before its injection to just after its heal, and one that makes the server
unavailable is also an outage window; one that finds nothing to hit is recorded as skipped. A
strike waits for a free target; the guaranteed ones always happen (the run's chaos phase lasts
until they have), extra ones are dropped once the phase's time is up.
"""

from __future__ import annotations

import asyncio
import random
import time
import traceback
from typing import Any

from chaos.faults import Fault
from chaos.faults.base import NothingToStrike
from chaos.history import FaultRecord, Recorder, Window
from chaos.schedule import Strike
from chaos.stack import ChaosStack

# An extra strike that finds no free target for this long is dropped.
EXTRA_WAIT_SECONDS = 10.0


class Nemesis:
    def __init__(
        self,
        stack: ChaosStack,
        recorder: Recorder,
        rng: random.Random,
        strikes: list[Strike],
        seconds: float,
        max_at_once: int = 2,
    ) -> None:
        self.stack = stack
        self.recorder = recorder
        self.rng = rng
        self.strikes = strikes
        self.seconds = seconds
        self.max_at_once = max_at_once
        self.busy: set[str] = set()
        self.active: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Strike as planned; returns once the time is up and every guaranteed strike began."""
        began = time.monotonic()
        for strike in self.strikes:
            delay = began + strike.at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            over = time.monotonic() - began >= self.seconds
            if over and not strike.guaranteed:
                continue
            remaining = max(1.0, self.seconds - (time.monotonic() - began))
            await self._strike(strike, remaining)
        delay = began + self.seconds - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def drain(self) -> None:
        """Wait until every fault begun has healed."""
        while self.active:
            await asyncio.gather(*self.active, return_exceptions=True)

    async def _strike(self, strike: Strike, remaining: float) -> None:
        deadline = None if strike.guaranteed else time.monotonic() + EXTRA_WAIT_SECONDS
        while True:
            free = [t for t in strike.kind.targets(self.stack) if t not in self.busy]
            if free and len(self.active) < self.max_at_once:
                break
            if deadline is not None and time.monotonic() > deadline:
                return
            await asyncio.sleep(0.2)
        low, high = strike.kind.hold_range
        hold = min(self.rng.uniform(low, high), max(low, remaining))
        fault = strike.kind(self.rng.choice(free), hold, self.rng)
        self.busy.add(fault.target)
        task = asyncio.ensure_future(self._perform(fault))
        self.active.add(task)
        task.add_done_callback(self.active.discard)

    async def _perform(self, fault: Fault) -> None:
        details: dict[str, Any] = {"hold_seconds": round(fault.hold_seconds, 2)}
        started: float | None = None
        try:
            details["prepare"] = await fault.prepare(self.stack)
            started = time.time()
            try:
                details["inject"] = await fault.inject(self.stack)
                await asyncio.sleep(fault.hold_seconds)
            finally:
                details["heal"] = await fault.heal(self.stack)
        except NothingToStrike as err:
            details["skipped"] = str(err)
            started = None
        except Exception:
            details["failed"] = traceback.format_exc(limit=5)
            if started is not None:
                # Whatever it left broken is mended before its window closes.
                await self.stack.heal()
        finally:
            self.busy.discard(fault.target)
        ended = time.time()
        self.recorder.fault(
            FaultRecord(
                kind=fault.kind,
                target=fault.target,
                started=ended if started is None else started,
                ended=ended,
                affects=fault.affects,
                details=details,
            )
        )
        cause = fault.outage_cause
        if cause is not None and started is not None:
            self.recorder.outage(Window(started=started, ended=ended, cause=cause))
