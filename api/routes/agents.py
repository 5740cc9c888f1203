"""/agents: start runs, read them, list them, cancel them."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

import structlog
from fastapi import APIRouter, Header, HTTPException, Query, status
from fastapi.responses import JSONResponse, Response
from temporalio.client import Client

from agent_runner.logs import bind_run_context
from agent_runner.models import SAFE_KEY_PATTERN, AgentType
from agent_runner.runs import (
    AgentBusyError,
    IdempotencyKeyReusedError,
    InvalidPageTokenError,
    RunFinishedError,
    RunNotFoundError,
    RunState,
    cancel_run,
    get_current_run,
    get_run_status,
    list_runs,
    start_request,
    start_run,
    start_run_detailed,
    wait_for_change,
)
from agent_runner.validation import UnsupportedAgentTypeError
from api.deps import AppState, ClientDep, StateDep, TargetDep
from api.errors import JsonBodyRoute
from api.retry_after import retry_after_seconds
from api.schemas import (
    BusyResponse,
    CancelResponse,
    ErrorResponse,
    RunAccepted,
    RunListResponse,
    RunRequest,
    RunStatusResponse,
    RunSummaryResponse,
)

BUSY_DETAIL = "An agent is already running, please retry later"
MAX_WAIT_SECONDS = 60.0
NOT_FOUND_DETAIL = "No run with this run_id"
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such run"},
    503: {"model": ErrorResponse, "description": "Temporal cannot be reached"},
}

router = APIRouter(prefix="/agents", tags=["agents"], route_class=JsonBodyRoute)
logger = structlog.stdlib.get_logger(__name__)


def status_url(run_id: str) -> str:
    return f"{router.prefix}/status/{run_id}"


@router.post(
    "/run",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RunAccepted,
    responses={
        400: {"model": ErrorResponse, "description": "Unsupported agent_type"},
        409: {
            "model": BusyResponse,
            "description": "Another run is open; see `Location` and `Retry-After`",
        },
        422: {"description": "Malformed body, or an Idempotency-Key reused for another request"},
        503: ERRORS[503],
    },
)
async def run_agent(
    body: RunRequest,
    # Only the app state (the client is on it): a burst of starts resolves one dependency each.
    state: StateDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            pattern=SAFE_KEY_PATTERN,
            description=(
                "Repeat a request safely: the same key and body return the same run_id, "
                "even after the run finished (while Temporal retains it)."
            ),
        ),
    ] = None,
) -> RunAccepted | JSONResponse:
    """Start a run. Only one runs at a time, across every replica: a start while one is open
    gets 409."""
    user_id = str(body.user_id)
    bind_run_context(agent_type=body.agent_type, user_id=user_id, run_id=None)
    try:
        request = start_request(
            body.agent_type, user_id, policy=state.policy, idempotency_key=idempotency_key
        )
    except UnsupportedAgentTypeError as err:
        logger.warning("unsupported_agent_type", message="Unsupported agent_type", reason=str(err))
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(err)) from None
    client = state.temporal_client
    replayed = False
    try:
        if idempotency_key is None:  # nothing to replay: every start is a new run
            run_id = await state.starts.start(
                state.target.workflow_id,
                lambda: start_run(client, request, target=state.target),
            )
        else:
            outcome = await start_run_detailed(client, request, target=state.target)
            run_id, replayed = outcome.run_id, outcome.replayed
    except IdempotencyKeyReusedError as err:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(err)) from None
    except AgentBusyError as err:
        return await busy_response(state, client, err.running_run_id)
    bind_run_context(agent_type=body.agent_type, user_id=user_id, run_id=run_id)
    if replayed:
        # The run was accepted (and counted) when the key was first used.
        logger.info("run_replayed", idempotency_key=idempotency_key)
    else:
        state.metrics.runs_accepted.inc()
        logger.info("run_accepted", idempotency_key=idempotency_key)
    return RunAccepted(run_id=run_id)


async def busy_response(
    state: AppState, client: Client, running_run_id: str | None
) -> JSONResponse:
    state.metrics.runs_rejected_busy.inc()
    # DEBUG: a burst of rejections would flood the log; the access log line (with agent_type
    # and user_id bound) and agent_runner_runs_rejected_busy_total already record each one.
    logger.debug("run_rejected", reason="busy", running_run_id=running_run_id)
    headers = {}
    if running_run_id:

        async def holder_start() -> datetime | None:
            return (await get_run_status(client, running_run_id, target=state.target)).started_at

        started_at = await state.start_times.get(running_run_id, holder_start)
        headers["Location"] = status_url(running_run_id)
        headers["Retry-After"] = str(
            retry_after_seconds(started_at, state.settings.agent_duration_seconds)
        )
    body = BusyResponse(detail=BUSY_DETAIL, running_run_id=running_run_id)
    return JSONResponse(body.model_dump(), status.HTTP_409_CONFLICT, headers=headers)


@router.get("/status/{run_id}", response_model=RunStatusResponse, responses=ERRORS)
async def run_status(
    run_id: str,
    # Only the app state, no client dependency: the hottest route resolves one dependency.
    state: StateDep,
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=MAX_WAIT_SECONDS,
            description=(
                "Long-poll: answer as soon as the state changes or the run finishes, at the "
                f"latest after this many seconds (at most {MAX_WAIT_SECONDS:g})."
            ),
        ),
    ] = 0,
) -> Response:
    """Read a run's state; `result` once DONE, `error` once ERROR."""
    cached = state.finished_runs.get(run_id)
    if cached is not None:
        return Response(cached, media_type="application/json")
    client = state.temporal_client
    try:
        if wait > 0:
            run = await wait_for_change(
                client, run_id, wait=timedelta(seconds=wait), target=state.target
            )
        else:
            run = await state.status_reads.get(
                run_id, lambda: get_run_status(client, run_id, target=state.target)
            )
    except RunNotFoundError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND_DETAIL) from None
    bind_run_context(agent_type=run.agent_type, user_id=run.user_id, run_id=run.run_id)
    body = RunStatusResponse.model_validate(run, from_attributes=True).model_dump_json().encode()
    if state.finished_runs.remember(run, body):
        state.metrics.runs_finished.labels(run.state).inc()
    return Response(body, media_type="application/json")


@router.get(
    "/current",
    response_model=RunStatusResponse,
    responses={404: {"model": ErrorResponse, "description": "No run is open"}, 503: ERRORS[503]},
)
async def current_run(client: ClientDep, target: TargetDep) -> RunStatusResponse:
    """The open run (PENDING or RUNNING), if any."""
    run = await get_current_run(client, target=target)
    if run is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No run is open")
    return RunStatusResponse.model_validate(run, from_attributes=True)


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
    target: TargetDep,
    agent_type: AgentType | None = None,
    user_id: UUID | None = None,
    state: RunState | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    page_token: Annotated[str | None, Query(max_length=4096)] = None,
) -> RunListResponse:
    """Runs newest first, from Temporal visibility; filter by agent type, user and state."""
    try:
        page = await list_runs(
            client,
            target=target,
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
