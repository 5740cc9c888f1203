"""Where a forged message goes: the deployment's workflow ids (coordinators, slots, odd ids next
to them) and the attempt working right now, found as an operator would find it (a worker's log
says which agent works, ``temporal workflow list`` which execution holds its run).

The rule: a target is looked up just before the strike and may be gone by the time the message
arrives (the agent finished meanwhile); the server's refusal is then part of the record, never
an error of the fault.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass

from agent_runner.ids import ScopeKind
from chaos.faults.base import NothingToStrike
from chaos.stack import ChaosStack
from chaos.temporal_cli import Execution, execution_of_run

# How long a fault looks for a working attempt before it gives up (recorded as skipped).
FIND_SECONDS = 15.0


@dataclass(frozen=True)
class WorkingAttempt:
    worker: int
    run_id: str
    attempt: int
    execution: Execution

    def record(self) -> dict[str, object]:
        return {
            "worker": f"worker{self.worker}",
            "run_id": self.run_id,
            "attempt": self.attempt,
            "workflow_id": self.execution.workflow_id,
            "temporal_run_id": self.execution.run_id,
        }


def base_id(stack: ChaosStack) -> str:
    return str(stack.settings().workflow_id)


def scope_ids(stack: ChaosStack) -> list[str]:
    """The coordinators' ids of the scopes the clients use."""
    base, config = base_id(stack), stack.recorder.config
    if config.scope == ScopeKind.USER_ID:
        return [f"{base}:user:{user}" for user in config.users]
    if config.scope == ScopeKind.AGENT_TYPE:
        return [f"{base}:type:{agent_type}" for agent_type in config.agent_types]
    return [base]


def slot_ids(stack: ChaosStack) -> list[str]:
    slots = stack.recorder.config.slots
    return [f"{scope}:slot-{k}" for scope in scope_ids(stack) for k in range(slots)]


def odd_ids(stack: ChaosStack, rng: random.Random) -> list[str]:
    """Ids beside the deployment's: a slot above N, another base, a scope of the kind the
    deployment does not run, a slot of a user nobody uses."""
    base, config = base_id(stack), stack.recorder.config
    stranger = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    other_kind = (
        f"{base}:type:{config.agent_types[0]}"
        if config.scope == ScopeKind.USER_ID
        else f"{base}:user:{stranger}"
    )
    return [
        f"{base}:slot-{config.slots + 5}",
        f"zzz-{base}-other",
        other_kind,
        f"{base}:user:{stranger}:slot-0",
    ]


def user_of_scope(stack: ChaosStack, scope_id: str, rng: random.Random) -> str:
    """A user whose runs belong to the scope ``scope_id``."""
    for user in stack.recorder.config.users:
        if scope_id.endswith(user):
            return user
    return rng.choice(stack.recorder.config.users)


async def working_attempt(
    stack: ChaosStack, rng: random.Random, workers: list[int] | None = None
) -> WorkingAttempt:
    """An attempt whose agent works now (on one of ``workers``), and its run's execution."""
    chosen = range(len(stack.workers)) if workers is None else workers
    deadline = time.monotonic() + FIND_SECONDS
    while time.monotonic() < deadline:
        working = sorted(
            (index, run_id, attempt)
            for index in chosen
            for run_id, attempt in stack.workers[index].agents_working()
            if attempt is not None
        )
        if working:
            index, run_id, attempt = rng.choice(working)
            execution = await execution_of_run(stack.server.address, run_id)
            if execution is not None:
                return WorkingAttempt(index, run_id, attempt, execution)
        await asyncio.sleep(0.2)
    raise NothingToStrike(f"no agent working for {FIND_SECONDS:g} s")
