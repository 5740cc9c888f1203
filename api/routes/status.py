"""GET /agents/status/{run_id} (and its long poll) and GET /agents/current."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated

from fastapi import HTTPException, Query, status
from fastapi.responses import Response
from temporalio.client import Client

from agent_runner.logs import bind_run_context
from agent_runner.runs import (
    RunNotFoundError,
    RunStatus,
    get_current_run,
    get_run_status,
    wait_for_change,
)
from api.deps import AppState, ClientDep, StateDep, TargetDep
from api.rendering import render_status
from api.routes.common import ERRORS, NOT_FOUND_DETAIL, agents_router, status_body
from api.schemas import ErrorResponse, RunStatusResponse

MAX_WAIT_SECONDS = 60.0
# How long a long poll may take to learn the run's status before it answers 503.
WATCH_FIRST_SECONDS = 10.0

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
    watch = state.watchers.peek(run_id)
    latest = watch.latest() if watch is not None else None
    try:
        if wait > 0:
            run = await _changed(state, client, run_id, wait)
        elif latest is not None:
            run, body = latest.event.status, latest.body
            return _answer(state, run, body)
        else:
            run = await state.status_reads.get(
                run_id, lambda: get_run_status(client, run_id, target=state.target)
            )
            if not run.is_final:
                # Read again: the next reads come from a watcher of this run.
                state.watchers.watch(client, state.target, run_id)
    except RunNotFoundError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND_DETAIL) from None
    return _answer(state, run, render_status(run))


def _answer(state: AppState, run: RunStatus, body: bytes) -> Response:
    bind_run_context(agent_type=run.agent_type, user_id=run.user_id, run_id=run.run_id)
    if state.finished_runs.remember(run, body):
        state.metrics.runs_finished.labels(run.state).inc()
    return Response(body, media_type="application/json")


async def _changed(state: AppState, client: Client, run_id: str, wait: float) -> RunStatus:
    """The run's status once its state or queue position changes, or it ends, or after
    ``wait`` seconds: from the run's watcher, which follows the run's history."""
    watch = state.watchers.watch(client, state.target, run_id)
    if watch is None:  # this process follows too many runs: ask Temporal directly
        return await wait_for_change(
            client, run_id, wait=timedelta(seconds=wait), target=state.target
        )
    await watch.first(min(wait, WATCH_FIRST_SECONDS) + WATCH_FIRST_SECONDS)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    first = watch.latest()
    while first is None and not watch.ending and (remaining := deadline - loop.time()) > 0:
        await watch.changed(remaining)
        first = watch.latest()
    if first is None:
        return await get_run_status(client, run_id, target=state.target)
    # Until this process shuts down: then answer now what is known.
    while (
        not first.event.status.is_final
        and not watch.ending
        and (remaining := deadline - loop.time()) > 0
    ):
        await watch.changed(remaining)
        latest = watch.latest()
        if latest is not None and _differs(latest.event.status, first.event.status):
            return latest.event.status
    latest = watch.latest()
    return (latest or first).event.status


def _differs(now: RunStatus, then: RunStatus) -> bool:
    return now.is_final or (now.state, now.queue_position) != (then.state, then.queue_position)


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
