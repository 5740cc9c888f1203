"""The agents, and the registry that maps an ``agent_type`` to one.

An agent is an async function of an :class:`AgentContext`; what it returns is the run's
``result``. Adding an agent: write the function, add an :class:`AgentType` member, register it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from temporalio import activity

from agent_runner.models import AgentType

# Heartbeat at least this often; more often when the heartbeat timeout is short.
MAX_HEARTBEAT_INTERVAL = timedelta(seconds=1)


@dataclass(frozen=True)
class AgentContext:
    agent_type: str
    user_id: str
    duration_seconds: float
    log: structlog.stdlib.BoundLogger

    async def work(self) -> None:
        """Stand-in for real work: wait ``duration_seconds``, heartbeating all along.

        The heartbeat is how Temporal notices a dead worker (the run then resumes on another
        one) and how a cancellation reaches the agent (as ``asyncio.CancelledError``).
        """
        interval = _heartbeat_interval().total_seconds()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.duration_seconds
        while (remaining := deadline - loop.time()) > 0:
            activity.heartbeat()
            await asyncio.sleep(min(remaining, interval))


Agent = Callable[[AgentContext], Awaitable[Any]]


def _heartbeat_interval() -> timedelta:
    timeout = activity.info().heartbeat_timeout
    if timeout is None:
        return MAX_HEARTBEAT_INTERVAL
    return min(MAX_HEARTBEAT_INTERVAL, timeout / 3)


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
