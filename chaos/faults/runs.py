"""Terminate a random open agent run with the real ``temporal workflow terminate``: no workflow
code runs, the agent may still be working, and the slot's next run must wait for it to stop."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from chaos.faults.base import Fault, NothingToStrike
from chaos.stack import ChaosStack
from chaos.temporal_cli import open_agent_runs, terminate

# How long to look for an open run before giving up on this fault.
FIND_SECONDS = 20.0


class TerminateRun(Fault):
    kind = "terminate-run"

    @classmethod
    def targets(cls, stack: ChaosStack) -> list[str]:
        return ["runs"]

    @property
    def affects(self) -> list[str]:
        return []

    async def inject(self, stack: ChaosStack) -> dict[str, Any]:
        address = stack.server.address
        deadline = time.monotonic() + FIND_SECONDS
        while time.monotonic() < deadline:
            executions = await open_agent_runs(address)
            if executions:
                chosen = self.rng.choice(sorted(executions, key=lambda e: e.workflow_id))
                result = await terminate(address, chosen, "chaos: terminated by the nemesis")
                return {
                    "workflow_id": chosen.workflow_id,
                    "temporal_run_id": chosen.run_id,
                    "open_runs": len(executions),
                    "terminated": result.returncode == 0,
                    "cli_output": result.output.strip()[-300:],
                }
            await asyncio.sleep(0.5)
        raise NothingToStrike(f"no open agent run in {FIND_SECONDS:g} s")
