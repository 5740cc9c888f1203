"""GET /agents/runs, POST /agents/runs/{run_id}/cancel and GET /agents/queue."""

from __future__ import annotations

import asyncio
from typing import Annotated
from uuid import UUID

import structlog
from fastapi import HTTPException, Query, status
from fastapi.responses import JSONResponse

from agent_runner.contract import CancelEffect
from agent_runner.ids import AGENT_TYPE_PATTERN, Scope, ScopeKind
from agent_runner.logs import bind_run_context
from agent_runner.runs import (
    InvalidPageTokenError,
    RunFinishedError,
    RunNotFoundError,
    RunState,
    RunStatus,
)
from agent_runner.runs.listing import list_queue, list_runs
from api.deps import AppState, StateDep
from api.routes.common import ERRORS, NOT_FOUND_DETAIL, agents_router, named_scope, status_body
from api.schemas import (
    CancelResponse,
    ErrorResponse,
    QueueResponse,
    RunListResponse,
    RunSummaryResponse,
)

# How long a cancel waits for the run's agent to stop before it answers 202.
CANCEL_WAIT_SECONDS = 3.0
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
            app.runs,
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
async def cancel(run_id: str, state: StateDep) -> CancelResponse | JSONResponse:
    """Cancel an open run and answer once it has ended (200, ERROR `cancelled`), or after a few
    seconds while its agent is still stopping (202). A run whose agent finished before the
    cancel reached it is 409: it is DONE."""
    bind_run_context(agent_type=None, user_id=None, run_id=run_id)
    runs = state.runs
    try:
        answer = await runs.cancel(run_id)
        run = await _ended(state, run_id) if answer.effect != CancelEffect.REMOVED else None
        if run is None:
            run = await runs.status(run_id)
    except RunNotFoundError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND_DETAIL) from None
    except RunFinishedError:
        raise HTTPException(status.HTTP_409_CONFLICT, "The run has already finished") from None
    bind_run_context(agent_type=run.agent_type, user_id=run.user_id, run_id=run_id)
    logger.info("run_cancel_requested", state=run.state, effect=answer.effect)
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


async def _ended(state: AppState, run_id: str) -> RunStatus | None:
    """The run's status once it has ended, from its watcher; None after a few seconds."""
    watch = state.watchers.watch(state.runs, run_id)
    if watch is None:
        return None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CANCEL_WAIT_SECONDS
    while (remaining := deadline - loop.time()) > 0:
        latest = watch.latest()
        if latest is not None and latest.event.status.is_final:
            return latest.event.status
        await watch.changed(remaining)
    return None


@router.get(
    "/queue",
    response_model=QueueResponse,
    responses={
        400: {"model": ErrorResponse, "description": "A page token this API did not issue"},
        422: {"model": ErrorResponse, "description": "A scope this deployment does not have"},
        503: ERRORS[503],
    },
)
async def queue(
    app: StateDep,
    scope: Annotated[
        str | None,
        Query(
            max_length=100,
            description=(
                "One scope only, as `AGENT_SCOPE` says: `global`, a user id (`user_id`) or an "
                "agent type (`agent_type`). Any other text is a 422."
            ),
        ),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=100, description="Runs on one page at most (holders and waiting).")
    ] = 50,
    page_token: Annotated[str | None, Query(max_length=4096)] = None,
) -> QueueResponse:
    """The runs holding a slot and the runs waiting, in order, of one scope (or of every scope
    with runs open), a page at a time: scope after scope, each one's holders then its queue."""
    runs_service = app.runs
    target = runs_service.target
    named: Scope | None = None
    if scope is not None:
        named = named_scope(target, scope)
    elif target.scope_kind == ScopeKind.GLOBAL:
        named = Scope(target.workflow_id)
    try:
        page = await list_queue(
            runs_service,
            scope=named,
            token_key=app.page_token_key,
            limit=limit,
            page_token=page_token,
        )
    except InvalidPageTokenError as err:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(err)) from None
    return QueueResponse(
        running=[status_body(run) for run in page.running],
        queued=[status_body(run) for run in page.queued],
        next_page_token=page.next_page_token,
    )
