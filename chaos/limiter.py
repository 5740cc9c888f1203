"""The limits changer: an operator who changes the limits under the nemesis's faults, through
the API, and puts them back at the end.

The rule: every ``GAP_SECONDS`` or so (drawn from its own generator) it either pauses the
chaos scope for ``PAUSE_SECONDS`` and resumes it (``POST /agents/scopes/{scope}/pause``, then
``/resume``, retried until an API answers 200), or, with ``--slots`` N > 1, sets N to a random
value from 1 to N (``PUT /agents/limits``). In the fair-shares phases planned from the seed
(:func:`fair_phases`) fair shares are on, with :data:`chaos.fair.WEIGHTS`, a larger queue and
the run's own N, while the feeders of :mod:`chaos.fair` keep both keys backlogged; pauses and
changes of N wait meanwhile (either ends a stretch of grants the checker judges; a 30-minute run
with pauses in the phase judged none). Turning a phase on or off is retried until an API
answers 200. Every ``PUT`` names every limit it cares for (N, the queue's
size, ``aging_seconds``, ``fair_shares``, ``weights``), so the checker knows what each change set
(:mod:`chaos.limits` says what it makes of them). Each change, pause and resume is an op with
its send and answer times. Once the clients have stopped and the stack is healed,
:meth:`LimitsChanger.restore` resumes the scope and sets the run's own limits back (fair shares
off), each retried until an API answers 200, so the finale and the probes run under them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from agent_runner.contract import ScopeLimits
from chaos import fair
from chaos.calls import Calls
from chaos.fair import FairPhase
from chaos.history import Op, Phase

GAP_SECONDS = (5.0, 25.0)
# The share of the steps that pause the scope (the others change N), and how long a pause lasts.
PAUSE_SHARE = 0.35
PAUSE_SECONDS = (2.0, 6.0)
RESTORE_SECONDS = 120.0
# The fair-shares phases: the first begins this share of the run in, each lasts LENGTH_SHARE
# of the run within these bounds, the next begins a gap later, and none goes on past END_SHARE
# of the run. Long, because faults leave few grants: seed 4242 (4 minutes, every fault kind)
# granted the two keys 34 runs in a phase of 120 s with N changing.
FAIR_FIRST_SHARE = (0.05, 0.1)
FAIR_LENGTH_SHARE = 0.75
FAIR_SECONDS = (60.0, 300.0)
FAIR_GAP_SECONDS = (60.0, 180.0)
FAIR_END_SHARE = 0.85
FAIR_SHORTEST_SECONDS = 30.0


def fair_phases(rng: random.Random, seconds: float) -> list[tuple[float, float]]:
    """When fair shares are on: (from, to) in seconds after the clients began."""
    phases: list[tuple[float, float]] = []
    at = seconds * rng.uniform(*FAIR_FIRST_SHARE)
    length = min(max(seconds * FAIR_LENGTH_SHARE, FAIR_SECONDS[0]), FAIR_SECONDS[1])
    while True:
        end = min(at + length, seconds * FAIR_END_SHARE)
        if end - at < FAIR_SHORTEST_SECONDS:
            return phases
        phases.append((at, end))
        at = end + rng.uniform(*FAIR_GAP_SECONDS)


class LimitsChanger:
    def __init__(
        self,
        calls: Calls,
        rng: random.Random,
        slots: int,
        queue_max: int,
        scope: tuple[str, str],
        seconds: float,
        gap_seconds: tuple[float, float] = GAP_SECONDS,
        pause_seconds: tuple[float, float] = PAUSE_SECONDS,
        phases: list[tuple[float, float]] | None = None,
    ) -> None:
        """``scope``: the scope it pauses, as the checker names it and as its URL does;
        ``phases``: the fair-shares phases (None: :func:`fair_phases` of ``seconds``)."""
        self.calls = calls
        self.rng = rng
        self.slots = slots
        self.queue_max = queue_max
        self.scope, self.label = scope
        self.gap_seconds = gap_seconds
        self.pause_seconds = pause_seconds
        self.phases = fair_phases(rng, seconds) if phases is None else phases
        self.phase = FairPhase()
        self._current = slots
        self._paused_once = False
        self._changed = False
        self._attempts = 0

    def _body(self, slots: int, *, fair_shares: bool) -> dict[str, Any]:
        return {
            "slots": slots,
            "queue_max": fair.QUEUE_MAX if fair_shares else self.queue_max,
            "aging_seconds": ScopeLimits().aging_seconds,
            "fair_shares": fair_shares,
            "weights": dict(fair.WEIGHTS),
        }

    def _next_api(self) -> int:
        self._attempts += 1
        return self._attempts % len(self.calls.urls)

    async def _until_200(self, send: Callable[[int], Awaitable[Op]]) -> bool:
        """Send (on one API after another) until an answer is 200, for RESTORE_SECONDS."""
        deadline = time.monotonic() + RESTORE_SECONDS
        while time.monotonic() < deadline:
            op: Op = await send(self._next_api())
            if op.status == 200:
                return True
            await asyncio.sleep(1.0)
        return False

    async def _limits(self, client: str, phase: Phase, api: int) -> Op:
        self._changed = True
        body = self._body(self._current, fair_shares=self.phase.on.is_set())
        return await self.calls.limits(client, phase, api, body)

    async def _set_fair(self, on: bool) -> None:
        if on:
            self.phase.on.set()
        else:
            self.phase.on.clear()
        await self._until_200(lambda api: self._limits("limits", "chaos", api))

    async def _pause(self, stop: asyncio.Event) -> None:
        self._paused_once = True
        api = self.rng.randrange(len(self.calls.urls))
        await self.calls.pause("limits", "chaos", api, self.scope, self.label, paused=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), self.rng.uniform(*self.pause_seconds))
        await self._resume("chaos")

    async def _resume(self, phase: Phase) -> bool:
        return await self._until_200(
            lambda api: self.calls.pause("limits", phase, api, self.scope, self.label, paused=False)
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Pause, change N and turn fair shares on and off as planned until ``stop`` is set."""
        began = time.monotonic()
        boundaries = [(began + at, on) for start, end in self.phases for at, on in
                      ((start, True), (end, False))]  # fmt: skip
        next_step = began + self.rng.uniform(*self.gap_seconds)
        while not stop.is_set():
            due = min([next_step, *(at for at, _ in boundaries[:1])])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, due - time.monotonic()))
            if stop.is_set():
                break
            if boundaries and boundaries[0][0] <= time.monotonic():
                _, on = boundaries.pop(0)
                await self._set_fair(on)
                continue
            pause = self.rng.random() < PAUSE_SHARE
            if pause and not self.phase.on.is_set():
                await self._pause(stop)
            elif self.slots > 1 and not self.phase.on.is_set():
                self._current = self.rng.randint(1, self.slots)
                await self._limits("limits", "chaos", self.rng.randrange(len(self.calls.urls)))
            next_step = time.monotonic() + self.rng.uniform(*self.gap_seconds)
        self.phase.on.clear()

    async def restore(self) -> bool:
        """Resume the scope and set the run's own limits back; whether an API said so to each."""
        resumed = not self._paused_once or await self._resume("final")
        if not self._changed:
            return resumed
        self._current = self.slots
        restored = await self._until_200(lambda api: self._limits("limits", "final", api))
        return resumed and restored
