"""Dependencies, as ``Annotated`` aliases so routes stay short and tests override one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from temporalio.client import Client

from agent_runner.runs import RunTarget
from agent_runner.settings import Settings
from api.cache import FinishedRuns, RunStartTimes
from api.metrics import ApiMetrics


@dataclass
class AppState:
    """What the app builds once and every request shares."""

    settings: Settings
    target: RunTarget
    metrics: ApiMetrics
    finished_runs: FinishedRuns
    start_times: RunStartTimes
    api_keys: frozenset[str] = frozenset()
    client: Client | None = None


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.agent_runner
    return state


def get_client(request: Request) -> Client:
    client = get_state(request).client
    assert client is not None, "the lifespan connects the client before any request"
    return client


def get_settings(request: Request) -> Settings:
    return get_state(request).settings


def get_target(request: Request) -> RunTarget:
    return get_state(request).target


StateDep = Annotated[AppState, Depends(get_state)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ClientDep = Annotated[Client, Depends(get_client)]
TargetDep = Annotated[RunTarget, Depends(get_target)]
