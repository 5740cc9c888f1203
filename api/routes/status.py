"""GET /agents/status/{run_id} (and its long poll) and GET /agents/current."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import HTTPException, Query, status
from fastapi.responses import Response

from agent_runner.logs import bind_run_context
from agent_runner.runs import RunNotFoundError, get_current_run, get_run_status, wait_for_change
from api.deps import ClientDep, StateDep, TargetDep
from api.routes.common import ERRORS, NOT_FOUND_DETAIL, agents_router, status_body
from api.schemas import ErrorResponse, RunStatusResponse

MAX_WAIT_SECONDS = 60.0

router = agents_router()


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
                "Long-poll: answer as soon as the state (or queue position) changes or the run "
                f"finishes, at the latest after this many seconds (at most {MAX_WAIT_SECONDS:g})."
            ),
        ),
    ] = 0,
) -> Response:
    """Read a run's state; `result` once DONE, `error` once ERROR, `queue_position` while it
    waits in a queue."""
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
    body = status_body(run).model_dump_json().encode()
    if state.finished_runs.remember(run, body):
        state.metrics.runs_finished.labels(run.state).inc()
    return Response(body, media_type="application/json")


@router.get(
    "/current",
    response_model=RunStatusResponse,
    responses={404: {"model": ErrorResponse, "description": "No run is open"}, 503: ERRORS[503]},
)
async def current_run(client: ClientDep, target: TargetDep) -> RunStatusResponse:
    """The oldest open run (PENDING or RUNNING), if any."""
    run = await get_current_run(client, target=target)
    if run is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No run is open")
    return status_body(run)
