"""Activity operations of the ``temporal`` CLI on an attempt whose agent works (issue 18): a
forged ``complete`` and ``fail`` (no stop key: the run must wait out the attempt's lease before
the slot's next agent), ``pause`` (unpaused at the heal), ``reset``, and ``update-options
--heartbeat-timeout 1s`` followed by cutting the agent's worker off: the server gives up on the
attempt within a second, and the agent, cut off, must still stop before anything takes its
place. Each records the attempt it aimed at and what the CLI answered.
"""

from __future__ import annotations

import secrets
from typing import Any

from chaos.faults.base import Fault, index_of
from chaos.faults.places import WorkingAttempt, working_attempt
from chaos.faults.processes import WorkerFault
from chaos.stack import ChaosStack
from chaos.temporal_cli import activity_op, as_json

ATTEMPTS = "attempt"


class AttemptFault(Fault):
    """One operation on a working attempt, anywhere (one such fault at a time)."""

    _aimed: WorkingAttempt | None = None

    @classmethod
    def targets(cls, stack: ChaosStack) -> list[str]:
        return [ATTEMPTS]

    @property
    def affects(self) -> list[str]:
        return []

    @property
    def aimed(self) -> WorkingAttempt:
        assert self._aimed is not None, "prepare finds the attempt"
        return self._aimed

    async def prepare(self, stack: ChaosStack) -> dict[str, Any]:
        self._aimed = await working_attempt(stack, self.rng)
        return self._aimed.record()

    async def operate(self, stack: ChaosStack, command: str, *more: str) -> dict[str, Any]:
        aimed = self.aimed
        address = stack.server.address
        result = await activity_op(address, command, aimed.execution, aimed.attempt, *more)
        return result.record()


class ForgeComplete(AttemptFault):
    kind = "forge-complete"

    async def inject(self, stack: ChaosStack) -> dict[str, Any]:
        return await self.operate(stack, "complete", "--result", as_json("approved"))


class ForgeFail(AttemptFault):
    kind = "forge-fail"

    async def inject(self, stack: ChaosStack) -> dict[str, Any]:
        # Details shaped like the attempt's own, with a stop key no claim committed to.
        details = {"attempt": self.aimed.attempt, "stop_key": secrets.token_hex(32)}
        return await self.operate(
            stack, "fail", "--reason", "forged by the nemesis", "--detail", as_json(details)
        )


class PauseActivity(AttemptFault):
    kind = "pause-activity"
    hold_range = (2.0, 12.0)

    async def inject(self, stack: ChaosStack) -> dict[str, Any]:
        return await self.operate(stack, "pause", "--reason", "chaos")

    async def heal(self, stack: ChaosStack) -> dict[str, Any]:
        return await self.operate(stack, "unpause")


class ResetActivity(AttemptFault):
    kind = "reset-activity"

    async def inject(self, stack: ChaosStack) -> dict[str, Any]:
        return await self.operate(stack, "reset")


class ShortHeartbeatThenCut(WorkerFault):
    """The heartbeat timeout of the attempt working on the target worker cut to 1 s, then the
    worker cut off from the server until the heal."""

    kind = "heartbeat-cut"
    hold_range = (3.0, 15.0)
    _aimed: WorkingAttempt | None = None

    async def prepare(self, stack: ChaosStack) -> dict[str, Any]:
        self._aimed = await working_attempt(stack, self.rng, [index_of(self.target)])
        return self._aimed.record()

    async def inject(self, stack: ChaosStack) -> dict[str, Any]:
        assert self._aimed is not None
        aimed = self._aimed
        result = await activity_op(
            stack.server.address,
            "update-options",
            aimed.execution,
            aimed.attempt,
            "--heartbeat-timeout",
            "1s",
        )
        stack.proxies[index_of(self.target)].cut()
        return result.record()

    async def heal(self, stack: ChaosStack) -> dict[str, Any]:
        stack.proxies[index_of(self.target)].heal()
        return {}
