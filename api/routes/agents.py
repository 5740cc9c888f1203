"""GET /agents/types: the agents installed beside this API, their parameters and defaults."""

from __future__ import annotations

import asyncio

from temporalio.service import RPCError

from agent_runner.runs import TemporalUnavailableError
from agent_runner.runs.pollers import agent_pollers
from api.deps import AppState, StateDep
from api.routes.common import agents_router
from api.schemas import AgentDefaultsResponse, AgentTypeResponse, AgentTypesResponse

router = agents_router()


@router.get("/types", response_model=AgentTypesResponse)
async def agent_types(state: StateDep) -> AgentTypesResponse:
    """Every agent this API accepts runs of, with the JSON Schema of its `params`, what its
    runs get (attempts, timeout, heartbeat timeout) and how many workers that have it poll."""
    names = list(state.agents)
    polling = await asyncio.gather(*(_workers(state, name) for name in names))
    return AgentTypesResponse(
        agents=[
            AgentTypeResponse(
                name=name,
                description=state.agents[name].description,
                params_schema=state.agents[name].params_model.model_json_schema(),
                defaults=_defaults(state, name),
                workers_polling=workers,
            )
            for name, workers in zip(names, polling, strict=True)
        ]
    )


def _defaults(state: AppState, name: str) -> AgentDefaultsResponse:
    policy = state.policy_for(name)
    return AgentDefaultsResponse(
        max_attempts=policy.max_attempts,
        timeout_seconds=policy.timeout_seconds,
        heartbeat_timeout_seconds=policy.heartbeat_timeout_seconds,
    )


async def _workers(state: AppState, name: str) -> int | None:
    try:
        return await state.worker_presence.get(
            name, lambda: agent_pollers(state.runs.client, state.runs.target, name)
        )
    except (RPCError, TemporalUnavailableError):
        return None  # the agents are still known; who polls is not
