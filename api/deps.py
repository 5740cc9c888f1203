"""Dependencies, as ``Annotated`` aliases so routes stay short and tests override one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from temporalio.client import Client

from agent_runner.models import RunPolicy
from agent_runner.runs import RunStatus, RunTarget
from agent_runner.settings import Settings
from api.cache import Coalesced, FinishedRuns, RunStartTimes
from api.metrics import ApiMetrics


@dataclass
class AppState:
    """What the app builds once and every request shares."""

    settings: Settings
    target: RunTarget
    # What every run this API starts gets as its retry policy (see README, "whose settings").
    policy: RunPolicy
    metrics: ApiMetrics
    finished_runs: FinishedRuns
    start_times: RunStartTimes
    status_reads: Coalesced[RunStatus] = field(default_factory=Coalesced)
    api_keys: frozenset[str] = frozenset()
    client: Client | None = None

    @property
    def temporal_client(self) -> Client:
        assert self.client is not None, "the lifespan connects the client before any request"
        return self.client


# Dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in a thread
# pool, which costs a thread hop on every request.


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.agent_runner
    return state


async def get_client(state: Annotated[AppState, Depends(get_state)]) -> Client:
    return state.temporal_client


async def get_target(state: Annotated[AppState, Depends(get_state)]) -> RunTarget:
    return state.target


StateDep = Annotated[AppState, Depends(get_state)]
ClientDep = Annotated[Client, Depends(get_client)]
TargetDep = Annotated[RunTarget, Depends(get_target)]
