"""Dependencies, as ``Annotated`` aliases so routes stay short and tests override one place."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from temporalio.client import Client

from agent_runner.runs import RunTarget
from agent_runner.settings import Settings


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_client(request: Request) -> Client:
    client: Client = request.app.state.temporal_client
    return client


def get_target(request: Request) -> RunTarget:
    target: RunTarget = request.app.state.run_target
    return target


SettingsDep = Annotated[Settings, Depends(get_settings)]
ClientDep = Annotated[Client, Depends(get_client)]
TargetDep = Annotated[RunTarget, Depends(get_target)]
