"""The agents, and the registry that maps an ``agent_type`` to one.

An agent is an async function of an :class:`AgentContext`; what it returns is the run's
``result``. Adding an agent: write the function, add an :class:`AgentType` member, register it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from activities.lease import Lease
from agent_runner.models import AgentType


@dataclass(frozen=True)
class AgentContext:
    """What an agent gets: who it works for, its logger, and its hold on the slot.

    ``fencing_token`` grows with every attempt of every run on this workflow id: pass it to the
    external resource with each write, and have the resource refuse a token lower than the
    highest it has seen. That is what keeps a stale attempt (a paused process that wakes up
    after its lease ran out) from writing, whatever it does between two checkpoints.
    """

    agent_type: str
    user_id: str
    duration_seconds: float
    log: structlog.stdlib.BoundLogger
    fencing_token: int
    lease: Lease

    def checkpoint(self) -> None:
        """Call before each step that touches the outside world: raises
        :class:`LeaseLostError` once the attempt can no longer be sure it holds the slot."""
        self.lease.check()

    async def work(self) -> None:
        """Stand-in for real work: ``duration_seconds`` of steps, each after a checkpoint.

        A cancellation reaches the agent as ``asyncio.CancelledError`` (within about half a
        second); a lost lease stops it at its next checkpoint, or sooner.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.duration_seconds
        while (remaining := deadline - loop.time()) > 0:
            self.checkpoint()
            await asyncio.sleep(min(remaining, self.lease.renew_every))
        self.checkpoint()


Agent = Callable[[AgentContext], Awaitable[Any]]


async def document_extractor(ctx: AgentContext) -> dict[str, Any]:
    """Pretends to extract the fields of the user's latest policy document."""
    await ctx.work()
    return {
        "document": "policy.pdf",
        "pages": 3,
        "fields": {"policy_holder": ctx.user_id, "policy_type": "home", "currency": "EUR"},
    }


async def policy_checker(ctx: AgentContext) -> str:
    """Pretends to check the user's policy; the decision is random, as in the original service."""
    await ctx.work()
    decision = random.choice(["approved", "rejected"])
    ctx.log.info("policy_decision", decision=decision, message=f"Policy {decision}")
    return decision


AGENTS: Mapping[str, Agent] = {
    AgentType.DOCUMENT_EXTRACTOR: document_extractor,
    AgentType.POLICY_CHECKER: policy_checker,
}
