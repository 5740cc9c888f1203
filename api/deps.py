"""Dependencies, as ``Annotated`` aliases so routes stay short and tests override one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from temporalio.client import Client

from agent_runner.connector import Connector
from agent_runner.runs import RunPolicy, RunStatus, RunTarget
from agent_runner.settings import Settings
from api.coalesce import Coalesced
from api.finished_runs import FinishedRuns
from api.metrics import ApiMetrics
from api.retry_after import RunStartTimes
from api.start_flight import StartFlights


@dataclass
class AppState:
    """What the app builds once and every request shares."""

    settings: Settings
    target: RunTarget
    # What every run this API starts gets as its retry policy (see README, "whose settings").
    policy: RunPolicy
    finished_runs: FinishedRuns
    api_keys: frozenset[str]
    metrics: ApiMetrics = field(default_factory=ApiMetrics)
    start_times: RunStartTimes = field(default_factory=RunStartTimes)
    status_reads: Coalesced[RunStatus] = field(default_factory=Coalesced)
    starts: StartFlights = field(default_factory=StartFlights)
    connector: Connector | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> AppState:
        return cls(
            settings=settings,
            target=settings.run_target(),
            policy=settings.run_policy(),
            finished_runs=FinishedRuns(settings.api_status_cache_size),
            api_keys=settings.load_api_keys(),
        )

    @property
    def temporal_client(self) -> Client:
        """The client; :class:`TemporalUnavailableError` (a 503) while not connected."""
        assert self.connector is not None, "the lifespan creates the connector"
        return self.connector.require()


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
