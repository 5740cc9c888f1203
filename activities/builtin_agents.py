"""The two agents agent-runner ships, written against the public agent interface
(:mod:`agent_runner.agents`) like any plug-in, and declared the same way (entry points in
pyproject.toml). They stand in for real work: each works for ``AGENT_DURATION_SECONDS``,
checking its lease and reporting progress as it goes.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from agent_runner.agents import Agent, AgentContext, NoParams
from agent_runner.settings import get_settings


class SimulatedAgent(Agent[NoParams]):
    """Works for ``duration_seconds`` (the worker's AGENT_DURATION_SECONDS unless given)."""

    def __init__(self, duration_seconds: float | None = None) -> None:
        self._duration = duration_seconds

    @property
    def duration_seconds(self) -> float:
        if self._duration is None:
            return get_settings().agent_duration_seconds
        return self._duration

    async def work(self, ctx: AgentContext, steps: list[str]) -> None:
        """One step after another, ``duration_seconds`` in all: each after a checkpoint, each
        reported as progress. A cancellation arrives as ``asyncio.CancelledError``."""
        per_step = self.duration_seconds / len(steps)
        for done, step in enumerate(steps):
            ctx.checkpoint()
            await ctx.report_progress(done / len(steps), step)
            await _sleep_checking(ctx, per_step)
        ctx.checkpoint()
        await ctx.report_progress(1.0, "done")


async def _sleep_checking(ctx: AgentContext, seconds: float) -> None:
    """Sleep in short steps, checking the lease between them: a paused process that wakes up
    past its lease stops at once instead of finishing the step."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (remaining := deadline - loop.time()) > 0:
        await asyncio.sleep(min(remaining, 0.25))
        ctx.checkpoint()


class PolicyChecker(SimulatedAgent):
    name = "policy-checker"
    description = 'Checks the user\'s policy; the result is "approved" or "rejected".'

    async def run(self, ctx: AgentContext, params: NoParams) -> str:
        await self.work(ctx, ["reading the policy", "checking the terms", "deciding"])
        decision = random.choice(["approved", "rejected"])  # noqa: S311 (a stand-in decision)
        ctx.log.info("policy_decision", decision=decision, message=f"Policy {decision}")
        return decision


class DocumentExtractor(SimulatedAgent):
    name = "document-extractor"
    description = "Extracts the fields of the user's latest policy document."

    async def run(self, ctx: AgentContext, params: NoParams) -> dict[str, Any]:
        await self.work(ctx, [f"reading page {page} of 3" for page in (1, 2, 3)])
        return {
            "document": "policy.pdf",
            "pages": 3,
            "fields": {"policy_holder": ctx.user_id, "policy_type": "home", "currency": "EUR"},
        }


def builtin_agents(duration_seconds: float | None = None) -> list[Agent[NoParams]]:
    """The agents agent-runner ships (the OpenAPI document in docs/ describes these)."""
    return [DocumentExtractor(duration_seconds), PolicyChecker(duration_seconds)]
