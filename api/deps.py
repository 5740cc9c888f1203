"""Dependencies, as ``Annotated`` aliases so routes stay short and tests override one place."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from temporalio.client import Client

from agent_runner.agent_registry import AgentRegistry
from agent_runner.connector import Connector
from agent_runner.locations import Scope
from agent_runner.queue_types import EnqueueRequest, EnqueueResult
from agent_runner.runs import RunPolicy, RunStatus, RunTarget, enqueue_runs
from agent_runner.runs.listing import token_key_from
from agent_runner.settings import Settings
from api.coalesce import Coalesced, Recent
from api.enqueue_batch import EnqueueBatches
from api.finished_runs import FinishedRuns
from api.metrics import ApiMetrics, TemporalRequests
from api.queue_metrics import QueueGauges
from api.rendering import render_status
from api.retry_after import RunStartTimes
from api.start_flight import StartFlights
from api.watchers import Watchers


@dataclass
class AppState:
    """What the app builds once and every request shares."""

    settings: Settings
    target: RunTarget
    # The agents installed beside this API: requests are checked against them.
    agents: AgentRegistry
    finished_runs: FinishedRuns
    api_keys: frozenset[str]
    metrics: ApiMetrics = field(default_factory=ApiMetrics)
    temporal_requests: TemporalRequests = field(init=False)
    queue_gauges: QueueGauges = field(init=False)
    start_times: RunStartTimes = field(default_factory=RunStartTimes)
    status_reads: Coalesced[RunStatus] = field(default_factory=Coalesced)
    starts: StartFlights = field(default_factory=StartFlights)
    # How many workers poll each agent's task queue, asked of Temporal at most every 5 s.
    worker_presence: Recent[int] = field(default_factory=lambda: Recent(ttl_seconds=5.0))
    # One watcher per open run that this process serves streams, long polls or reads of.
    watchers: Watchers = field(default_factory=lambda: Watchers(render_status))
    enqueues: EnqueueBatches | None = None
    connector: Connector | None = None

    @classmethod
    def from_settings(cls, settings: Settings, agents: AgentRegistry | None = None) -> AppState:
        state = cls(
            settings=settings,
            target=settings.run_target(),
            agents=agents if agents is not None else AgentRegistry.installed_or_exit(),
            finished_runs=FinishedRuns(settings.api_status_cache_size),
            api_keys=settings.load_api_keys(),
        )
        state.enqueues = EnqueueBatches(state.send_enqueues)
        return state

    def __post_init__(self) -> None:
        self.temporal_requests = TemporalRequests(self.metrics)
        self.queue_gauges = QueueGauges(self.metrics)

    def policy_for(self, agent_type: str) -> RunPolicy:
        """The retry policy a run of this agent gets: the settings given in the environment,
        else the agent's own defaults, else ours (see README, "whose settings")."""
        return self.settings.run_policy(self.agents[agent_type].defaults)

    async def send_enqueues(
        self, scope: Scope, requests: Sequence[EnqueueRequest]
    ) -> list[EnqueueResult]:
        return await enqueue_runs(self.temporal_client, self.target, scope, requests)

    @property
    def page_token_key(self) -> bytes | None:
        """Signs the page tokens: from API_PAGE_TOKEN_SECRET, so every replica takes back the
        others' tokens; unset, each process signs with a key of its own."""
        secret = self.settings.api_page_token_secret
        return (
            token_key_from(secret.get_secret_value())
            if secret and secret.get_secret_value()
            else None
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
