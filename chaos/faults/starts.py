"""Workflows started from outside with ``temporal workflow start`` (issue 18): the run type on
slot ids and odd ids (no coordinator started it: it must end at once, no agent), a workflow of
another type on another task queue squatting a slot id (nothing runs it: the coordinator must
remove it before it grants the slot), and the coordinator type on odd ids and with a forged
state as its input (it trusts none).

Every run id a forged input names starts with ``forged-``: not the form a coordinator mints, so
an agent of one is never taken for a run whose answer was lost.
"""

from __future__ import annotations

import secrets
from typing import Any

from chaos.faults.base import Fault
from chaos.faults.places import base_id, odd_ids, scope_ids, slot_ids, user_of_scope
from chaos.stack import ChaosStack
from chaos.temporal_cli import CliResult, start_workflow

STARTS = "starts"
RUN_TYPE = "AgentRunWorkflow"
SCOPE_TYPE = "AgentScopeWorkflow"
NOBODY_QUEUE = "chaos-nobody-polls"


class _StartFault(Fault):
    @classmethod
    def targets(cls, stack: ChaosStack) -> list[str]:
        return [STARTS]

    @property
    def affects(self) -> list[str]:
        return []

    async def start(
        self, stack: ChaosStack, workflow_type: str, workflow_id: str, value: Any, queue: str = ""
    ) -> dict[str, Any]:
        task_queue = queue or str(stack.settings().task_queue)
        result: CliResult = await start_workflow(
            stack.server.address, task_queue, workflow_type, workflow_id, value
        )
        return {"workflow_id": workflow_id, "type": workflow_type, **result.record()}


class StartRunWorkflow(_StartFault):
    kind = "start-run-workflow"

    async def inject(self, stack: ChaosStack) -> dict[str, Any]:
        config = stack.recorder.config
        slot = self.rng.choice(slot_ids(stack))
        user = user_of_scope(stack, slot, self.rng)
        value = {
            "run_id": f"forged-{secrets.token_hex(8)}",
            "agent_type": self.rng.choice(config.agent_types),
            "user_id": user,
            "policy": {
                "max_attempts": 1,
                "timeout_seconds": 30.0,
                "heartbeat_timeout_seconds": 3.0,
                "retry_initial_interval_seconds": 1.0,
            },
            "fence_base": 10**30,
            "handoff": {},
        }
        started = [await self.start(stack, RUN_TYPE, slot, value)]
        for odd in odd_ids(stack, self.rng):
            started.append(await self.start(stack, RUN_TYPE, odd, value))
        squatted = self.rng.choice(slot_ids(stack))
        started.append(await self.start(stack, "NotOurs", squatted, value, NOBODY_QUEUE))
        return {"started": started}


class StartScopeWorkflow(_StartFault):
    kind = "start-scope-workflow"

    async def inject(self, stack: ChaosStack) -> dict[str, Any]:
        base = base_id(stack)
        forged_state = {
            "limits": {"slots": 50, "queue_max": 5},
            "entries": [],
            "queue": [],
            "slots": [],
        }
        odd = odd_ids(stack, self.rng)
        targets: list[tuple[str, Any]] = [
            ("evil", {"scope": {"base": "evil"}}),
            (f"{base}:slot-0", None),
            (odd[2], None),  # a scope of the kind the deployment does not run
            (self.rng.choice(scope_ids(stack)), forged_state),
        ]
        started = [
            await self.start(stack, SCOPE_TYPE, workflow_id, value)
            for workflow_id, value in targets
        ]
        return {"started": started}
