"""What the app builds once and every request shares, as ``Annotated`` dependencies so routes
stay short and tests override one place."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated

import structlog
from fastapi import Depends, Request

from agent_runner.agent_registry import AgentRegistry
from agent_runner.connector import Connector
from agent_runner.contract import RunPolicy
from agent_runner.deployment import DeploymentMismatchError, join_deployment
from agent_runner.process import exit_now
from agent_runner.runs import Runs, TemporalUnavailableError
from agent_runner.runs.listing import token_key_from
from agent_runner.runs.watchers import Watchers
from agent_runner.settings import Settings
from api.coalesce import Recent
from api.finished_runs import FinishedRuns
from api.metrics import ApiMetrics, TemporalRequests
from api.queue_metrics import QueueGauges
from api.rendering import render_status

logger = structlog.stdlib.get_logger(__name__)


@dataclass
class AppState:
    settings: Settings
    # The agents installed beside this API: requests are checked against them.
    agents: AgentRegistry
    api_keys: frozenset[str]
    finished_runs: FinishedRuns
    metrics: ApiMetrics = field(default_factory=ApiMetrics)
    # One watcher per open run that this process serves streams, long polls or reads of.
    watchers: Watchers = field(default_factory=lambda: Watchers(render_status))
    # How many workers poll each agent's task queue, asked of Temporal at most every 5 s.
    worker_presence: Recent[int] = field(default_factory=lambda: Recent(ttl_seconds=5.0))
    temporal_requests: TemporalRequests = field(init=False)
    queue_gauges: QueueGauges = field(init=False)
    connector: Connector | None = None
    _runs: Runs | None = None

    @classmethod
    def from_settings(cls, settings: Settings, agents: AgentRegistry | None = None) -> AppState:
        return cls(
            settings=settings,
            agents=agents if agents is not None else AgentRegistry.installed_or_exit(),
            finished_runs=FinishedRuns(settings.api_status_cache_size),
            api_keys=settings.load_api_keys(),
        )

    def __post_init__(self) -> None:
        self.temporal_requests = TemporalRequests(self.metrics)
        self.queue_gauges = QueueGauges(self.metrics)

    @property
    def runs(self) -> Runs:
        """The runs service; :class:`TemporalUnavailableError` (a 503) until this API has
        connected to Temporal and read the deployment's record."""
        if self._runs is None:
            assert self.connector is not None, "the lifespan creates the connector"
            self.connector.require()
            raise TemporalUnavailableError("reading the deployment's settings record")
        return self._runs

    async def join(self) -> None:
        """Once connected: read (or seed) the deployment's record, then serve runs."""
        assert self.connector is not None
        client = await self.connector.wait_connected()
        while self._runs is None:
            try:
                deployment = await join_deployment(client, self.settings, role="an API")
            except DeploymentMismatchError as err:
                logger.error("deployment_mismatch", message=str(err))
                exit_now(2)
            except Exception as err:
                logger.warning("deployment_unreadable", error=str(err))
                await asyncio.sleep(1.0)
                continue
            target = self.settings.run_target(deployment.scope_kind)
            self._runs = Runs(client, target)
        gate = self._runs.gate
        self.metrics.start_limit.set_function(lambda: gate.limit)
        self.metrics.starts_in_flight.set_function(lambda: gate.in_flight)

    def policy_for(self, agent_type: str) -> RunPolicy:
        """The retry policy a run of this agent gets: the settings given in the environment,
        else the agent's own defaults, else ours (see docs/agents.md, "whose defaults")."""
        return self.settings.run_policy(self.agents[agent_type].defaults)

    @property
    def page_token_key(self) -> bytes | None:
        """Signs the page tokens: from API_PAGE_TOKEN_SECRET, so every replica takes back the
        others' tokens; unset, each process signs with a key of its own."""
        secret = self.settings.api_page_token_secret
        if secret and secret.get_secret_value():
            return token_key_from(secret.get_secret_value())
        return None


# Dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in a thread
# pool, which costs a thread hop on every request.


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.agent_runner
    return state


async def get_runs(state: Annotated[AppState, Depends(get_state)]) -> Runs:
    return state.runs


StateDep = Annotated[AppState, Depends(get_state)]
RunsDep = Annotated[Runs, Depends(get_runs)]
