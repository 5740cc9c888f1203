"""Agents of the benchmarks only, written against the public agent interface like any plug-in.
The benchmarks' own API and worker processes (``bench.agents_api``, ``bench.agents_worker``)
serve them; each run says how long it works, so one process pair serves every scenario."""

from __future__ import annotations

import asyncio
import time

from pydantic import BaseModel, ConfigDict, Field

from agent_runner.agent_registry import AgentRegistry
from agent_runner.agents import Agent, AgentContext

# Reports closer together than half a second are merged (activities/context.py): a ticker
# spaces its reports wider, so each one is sent at the instant it names.
MIN_REPORT_EVERY_SECONDS = 0.55
REPORT_PREFIX = "reported at "


class SleepParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(default=0.0, ge=0, le=3600)


class TickParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reports: int = Field(default=10, ge=1, le=1000)
    every_seconds: float = Field(default=0.6, ge=MIN_REPORT_EVERY_SECONDS, le=60)
    # Time for a subscriber to connect before the first report.
    first_after_seconds: float = Field(default=1.0, ge=0, le=60)


class Sleeper(Agent[SleepParams]):
    """Works ``seconds`` and reports nothing, like the raw baseline's activity."""

    name = "bench-sleeper"
    params_model = SleepParams
    description = "Sleeps for params.seconds; the result is 'approved'."

    async def run(self, ctx: AgentContext, params: SleepParams) -> str:
        await asyncio.sleep(params.seconds)
        ctx.checkpoint()
        return "approved"


class Ticker(Agent[TickParams]):
    """Reports progress at known instants: each report's message carries the wall-clock time
    (``time.time()``) it was made, and the result lists them all."""

    name = "bench-ticker"
    params_model = TickParams
    description = "Reports progress params.reports times, each message naming its time."

    async def run(self, ctx: AgentContext, params: TickParams) -> list[float]:
        reported: list[float] = []
        await asyncio.sleep(params.first_after_seconds)
        for index in range(params.reports):
            if index:
                await asyncio.sleep(params.every_seconds)
            ctx.checkpoint()
            now = time.time()
            await ctx.report_progress((index + 1) / params.reports, f"{REPORT_PREFIX}{now:.6f}")
            reported.append(now)
        return reported


def reported_at(message: str) -> float | None:
    """The time a ticker's progress message names."""
    if not message.startswith(REPORT_PREFIX):
        return None
    return float(message.removeprefix(REPORT_PREFIX))


def bench_registry() -> AgentRegistry:
    return AgentRegistry.of([Sleeper(), Ticker()], source="bench.agents")
