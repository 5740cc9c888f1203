"""Faults of the Temporal server: restart it on its db file (SIGTERM or SIGKILL, then start it
again), or freeze it (SIGSTOP, then SIGCONT). Either is an outage: every request that needs the
server may be answered 503 while it lasts."""

from __future__ import annotations

import random
import signal
from typing import Any

from chaos.faults.base import Fault
from chaos.stack import ChaosStack

SERVER = "server"


class _ServerFault(Fault):
    @classmethod
    def targets(cls, stack: ChaosStack) -> list[str]:
        return [SERVER]

    @property
    def affects(self) -> list[str]:
        return [SERVER]


class RestartServer(_ServerFault):
    kind = "restart-server"
    hold_range = (0.0, 5.0)

    def __init__(self, target: str, hold_seconds: float, rng: random.Random) -> None:
        super().__init__(target, hold_seconds, rng)
        self.signum = rng.choice((signal.SIGTERM, signal.SIGKILL))

    @property
    def outage_cause(self) -> str:
        return f"restarted ({self.signum.name})"

    async def inject(self, stack: ChaosStack) -> dict[str, Any]:
        await stack.stop_server(self.signum)
        return {"signal": self.signum.name}

    async def heal(self, stack: ChaosStack) -> dict[str, Any]:
        await stack.start_server()
        return {"answers": await stack.server_answers()}


class PauseServer(_ServerFault):
    kind = "pause-server"
    hold_range = (2.0, 15.0)

    @property
    def outage_cause(self) -> str:
        return "paused (SIGSTOP)"

    async def inject(self, stack: ChaosStack) -> dict[str, Any]:
        stack.pause_server()
        return {}

    async def heal(self, stack: ChaosStack) -> dict[str, Any]:
        stack.resume_server()
        return {}
