"""An operator's ``temporal workflow cancel`` and ``terminate`` of a scope's coordinator. A
cancel is logged and ignored by the coordinator. A terminate runs no workflow code: the runs on
its slots go on (they were started to outlive it), the next start makes a new coordinator, which
finds them on its slots and takes over the old one's queue and keys (it queries the terminated
execution, see docs/design.md).
"""

from __future__ import annotations

from typing import Any

from chaos.faults.base import Fault
from chaos.faults.places import scope_ids
from chaos.stack import ChaosStack
from chaos.temporal_cli import run_cli

COORDINATORS = "coordinators"


class _CoordinatorFault(Fault):
    command = ""

    @classmethod
    def targets(cls, stack: ChaosStack) -> list[str]:
        return [COORDINATORS]

    @property
    def affects(self) -> list[str]:
        return []

    async def inject(self, stack: ChaosStack) -> dict[str, Any]:
        scope_id = self.rng.choice(scope_ids(stack))
        more = ("--reason", "chaos: by the nemesis") if self.command == "terminate" else ()
        result = await run_cli(
            stack.server.address, "workflow", self.command, "--workflow-id", scope_id, *more
        )
        return {"scope_id": scope_id, **result.record()}


class CancelCoordinator(_CoordinatorFault):
    kind = "cancel-coordinator"
    command = "cancel"


class TerminateCoordinator(_CoordinatorFault):
    kind = "terminate-coordinator"
    command = "terminate"
