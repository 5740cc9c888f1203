"""/agents: start a run, read its status."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import APIRouter, HTTPException, status

from agent_runner.logs import bind_run_context
from agent_runner.models import RunPolicy
from agent_runner.runs import AgentBusyError, RunNotFoundError, get_run_status, start_agent_run
from agent_runner.settings import Settings
from agent_runner.validation import UnsupportedAgentTypeError
from api.deps import ClientDep, SettingsDep, TargetDep
from api.schemas import ErrorResponse, RunAccepted, RunRequest, RunStatusResponse

BUSY_DETAIL = "An agent is already running, please retry later"
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorResponse, "description": "Temporal cannot be reached"}
}

router = APIRouter(prefix="/agents", tags=["agents"])
logger = structlog.stdlib.get_logger(__name__)


def run_policy(settings: Settings) -> RunPolicy:
    return RunPolicy(
        max_attempts=settings.agent_max_attempts,
        timeout_seconds=settings.agent_timeout_seconds,
        heartbeat_timeout_seconds=settings.agent_heartbeat_timeout_seconds,
        retry_initial_interval_seconds=settings.agent_retry_initial_interval_seconds,
    )


@router.post(
    "/run",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RunAccepted,
    responses={
        400: {"model": ErrorResponse, "description": "Unsupported agent_type"},
        409: {"model": ErrorResponse, "description": "Another run is in progress"},
        **UNAVAILABLE,
    },
)
async def run_agent(
    body: RunRequest, client: ClientDep, target: TargetDep, settings: SettingsDep
) -> RunAccepted:
    """Start a run. Only one runs at a time, across every replica: a start while one is open
    gets 409."""
    user_id = str(body.user_id)
    bind_run_context(agent_type=body.agent_type, user_id=user_id, run_id=None)
    try:
        run_id = await start_agent_run(
            client, body.agent_type, user_id, target=target, policy=run_policy(settings)
        )
    except UnsupportedAgentTypeError as err:
        logger.warning("Unsupported agent_type", reason=str(err))
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(err)) from None
    except AgentBusyError as err:
        logger.info("run_rejected", reason="busy", running_run_id=err.running_run_id)
        raise HTTPException(status.HTTP_409_CONFLICT, BUSY_DETAIL) from None
    bind_run_context(agent_type=body.agent_type, user_id=user_id, run_id=run_id)
    logger.info("run_accepted")
    return RunAccepted(run_id=run_id)


@router.get(
    "/status/{run_id}",
    response_model=RunStatusResponse,
    responses={404: {"model": ErrorResponse, "description": "No such run"}, **UNAVAILABLE},
)
async def run_status(run_id: str, client: ClientDep, target: TargetDep) -> RunStatusResponse:
    """Read a run's state; `result` once DONE, `error` once ERROR."""
    try:
        run = await get_run_status(client, run_id, target=target)
    except RunNotFoundError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No run with this run_id") from None
    bind_run_context(agent_type=run.agent_type, user_id=run.user_id, run_id=run.run_id)
    return RunStatusResponse.model_validate(run, from_attributes=True)
