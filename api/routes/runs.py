"""GET /agents/runs, POST /agents/runs/{run_id}/cancel and GET /agents/queue."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import structlog
from fastapi import HTTPException, Query, status
from fastapi.responses import JSONResponse

from agent_runner.locations import AGENT_TYPE_PATTERN
from agent_runner.logs import bind_run_context
from agent_runner.runs import (
    InvalidPageTokenError,
    RunFinishedError,
    RunNotFoundError,
    RunState,
    cancel_run,
    get_queue,
    list_runs,
)
from api.deps import ClientDep, StateDep, TargetDep
from api.routes.common import ERRORS, NOT_FOUND_DETAIL, agents_router, status_body
from api.schemas import (
    CancelResponse,
    ErrorResponse,
    QueueResponse,
    RunListResponse,
    RunSummaryResponse,
)

router = agents_router()
logger = structlog.stdlib.get_logger(__name__)


@router.get(
    "/runs",
    response_model=RunListResponse,
    responses={
        400: {"model": ErrorResponse, "description": "A page token this API did not issue"},
        503: ERRORS[503],
    },
)
async def runs(
    client: ClientDep,
    app: StateDep,
    agent_type: Annotated[str | None, Query(pattern=AGENT_TYPE_PATTERN, max_length=100)] = None,
    user_id: UUID | None = None,
    state: RunState | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    page_token: Annotated[str | None, Query(max_length=4096)] = None,
) -> RunListResponse:
    """Runs newest first (the runs waiting in queues first), from Temporal visibility; filter
    by agent type, user and state."""
    try:
        page = await list_runs(
            client,
            target=app.target,
            token_key=app.page_token_key,
            agent_type=agent_type,
            user_id=str(user_id) if user_id else None,
            state=state,
            limit=limit,
            page_token=page_token,
        )
    except InvalidPageTokenError as err:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(err)) from None
    return RunListResponse(
        runs=[RunSummaryResponse.model_validate(run, from_attributes=True) for run in page.runs],
        next_page_token=page.next_page_token,
    )


@router.post(
    "/runs/{run_id}/cancel",
    response_model=CancelResponse,
    responses={
        **ERRORS,
        202: {
            "model": CancelResponse,
            "description": "Cancellation requested; the agent has not stopped yet",
        },
        409: {
            "model": ErrorResponse,
            "description": "The run had already finished, or finished before the cancel reached it",
        },
    },
)
async def cancel(
    run_id: str, client: ClientDep, target: TargetDep
) -> CancelResponse | JSONResponse:
    """Cancel an open run and answer once it has ended (200, ERROR `cancelled`), or after a few
    seconds while its agent is still stopping (202). A run whose agent finished before the
    cancel reached it is 409: it is DONE."""
    bind_run_context(agent_type=None, user_id=None, run_id=run_id)
    try:
        run = await cancel_run(client, run_id, target=target)
    except RunNotFoundError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND_DETAIL) from None
    except RunFinishedError:
        raise HTTPException(status.HTTP_409_CONFLICT, "The run has already finished") from None
    bind_run_context(agent_type=run.agent_type, user_id=run.user_id, run_id=run_id)
    logger.info("run_cancel_requested", state=run.state)
    if run.state == RunState.DONE:
        raise HTTPException(
            status.HTTP_409_CONFLICT, "The run finished before the cancel reached its agent"
        )
    if run.state == RunState.ERROR:
        return CancelResponse(run_id=run_id, state=run.state, detail=f"Ended: {run.error}")
    body = CancelResponse(
        run_id=run_id,
        state=run.state,
        detail="Cancellation requested; the agent has not stopped yet",
    )
    return JSONResponse(body.model_dump(), status.HTTP_202_ACCEPTED)


@router.get("/queue", response_model=QueueResponse, responses={503: ERRORS[503]})
async def queue(
    client: ClientDep,
    target: TargetDep,
    scope: Annotated[
        str | None,
        Query(
            max_length=100,
            description=(
                "One scope only: a user id (`AGENT_SCOPE=user_id`) or an agent type "
                "(`agent_type`). Ignored with the global scope."
            ),
        ),
    ] = None,
) -> QueueResponse:
    """The runs holding a slot and the runs waiting, in order, of every scope (or one)."""
    try:
        view = await get_queue(client, target=target, scope_key=scope)
    except ValueError:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "scope must be a user id (a UUID)"
        ) from None
    return QueueResponse(
        running=[status_body(run) for run in view.running],
        queued=[status_body(run) for run in view.queued],
    )
