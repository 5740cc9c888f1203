"""GET and PUT /agents/limits: the deployment's bound (N and the queue's size), the one record
every replica follows. A change is logged with the API key that made it and reaches every
coordinator within a second; lowering N never stops an agent at work."""

from __future__ import annotations

from dataclasses import asdict, replace

import structlog
from fastapi import HTTPException, Request, status

from agent_runner.contract import DeploymentSettings
from agent_runner.deployment import change_limits, read_deployment
from agent_runner.runs import TemporalUnavailableError
from agent_runner.runs.errors import temporal_call
from api.auth import caller
from api.deps import StateDep
from api.routes.common import ERRORS, agents_router
from api.schemas import LimitsChangeRequest, LimitsResponse

router = agents_router()
logger = structlog.stdlib.get_logger(__name__)


@router.get("/limits", response_model=LimitsResponse, responses={503: ERRORS[503]})
async def limits(state: StateDep) -> LimitsResponse:
    """The deployment's bound as every replica follows it now."""
    runs = state.runs
    with temporal_call():
        record, _ = await read_deployment(runs.client, state.settings.workflow_id)
    if record is None:
        raise TemporalUnavailableError("the deployment's settings record is not there yet")
    return _body(record)


@router.put(
    "/limits",
    response_model=LimitsResponse,
    responses={
        415: ERRORS[415],
        422: {"description": "A limit out of range, or an unknown field"},
        503: ERRORS[503],
    },
)
async def set_limits(
    change: LimitsChangeRequest, request: Request, state: StateDep
) -> LimitsResponse:
    """Change N (`slots`), the queue's size (`queue_max`) or its order (`aging_seconds`,
    `fair_shares`, `weights`: the whole map) for every scope of the deployment. Lowering N
    lets the agents at work finish and grants nothing until fewer than N work; raising it
    grants waiting runs at once."""
    given = {name: getattr(change, name) for name in change.model_fields_set}
    given = {name: value for name, value in given.items() if value is not None}
    if not given:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "Give at least one of slots, queue_max, aging_seconds, fair_shares, weights",
        )
    runs = state.runs
    with temporal_call():
        current, _ = await read_deployment(runs.client, state.settings.workflow_id)
        if current is None:
            raise TemporalUnavailableError("the deployment's settings record is not there yet")
        wanted = replace(current.limits, **given)
        record = await change_limits(
            runs.client, state.settings, wanted, changed_by=caller(request)
        )
    return _body(record)


def _body(record: DeploymentSettings) -> LimitsResponse:
    return LimitsResponse(
        scope_kind=record.scope_kind.value,
        **asdict(record.limits),
        version=record.version,
        changed_by=record.changed_by,
        changed_at=record.changed_at,
    )
