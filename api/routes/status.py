"""GET /agents/status/{run_id} (and its long poll) and GET /agents/current."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

from fastapi import HTTPException, Query, status
from fastapi.responses import Response

from agent_runner.ids import Scope, ScopeKind
from agent_runner.logs import bind_run_context
from agent_runner.runs import RunNotFoundError, Runs, RunStatus
from api.deps import AppState, RunsDep, StateDep
from api.rendering import render_status
from api.routes.common import ERRORS, NOT_FOUND_DETAIL, agents_router, status_body
from api.schemas import ErrorResponse, RunStatusResponse

MAX_WAIT_SECONDS = 60.0
# How long a long poll may take to learn the run's status before it answers 503.
WATCH_FIRST_SECONDS = 10.0
# With scopes per user or agent type, the open runs /agents/current reads at most.
CURRENT_LOOKED_AT = 50

router = agents_router()


@router.get("/status/{run_id}", response_model=RunStatusResponse, responses=ERRORS)
async def run_status(
    run_id: str,
    # Only the app state: the hottest route resolves one dependency.
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
    runs = state.runs
    try:
        runs.locate(run_id)
        run, body = await _read(state, runs, run_id, wait)
    except RunNotFoundError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND_DETAIL) from None
    bind_run_context(agent_type=run.agent_type, user_id=run.user_id, run_id=run.run_id)
    if state.finished_runs.remember(run, body):
        state.metrics.runs_finished.labels(run.state).inc()
    return Response(body, media_type="application/json")


async def _read(state: AppState, runs: Runs, run_id: str, wait: float) -> tuple[RunStatus, bytes]:
    """The run's status now (``wait`` 0), or once it changes, from this process's watcher of
    the run when it has one that is current; else from Temporal (and the next reads from a
    watcher, started now)."""
    watch = state.watchers.peek(run_id)
    latest = watch.latest() if watch is not None else None
    if wait <= 0 and latest is not None:
        return latest.event.status, latest.body
    if wait <= 0:
        run = await runs.status(run_id)
        if not run.is_final:
            state.watchers.watch(runs, run_id)
        return run, render_status(run)
    watch = state.watchers.watch(runs, run_id)
    if watch is None:  # this process follows too many runs: read without waiting
        run = await runs.status(run_id)
        return run, render_status(run)
    await watch.first(min(wait, WATCH_FIRST_SECONDS) + WATCH_FIRST_SECONDS)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    first = watch.latest()
    while first is None and not watch.ending and (remaining := deadline - loop.time()) > 0:
        await watch.changed(remaining)
        first = watch.latest()
    if first is None:
        run = await runs.status(run_id)
        return run, render_status(run)
    # Until this process shuts down: then answer now what is known.
    while (
        not first.event.status.is_final
        and not watch.ending
        and (remaining := deadline - loop.time()) > 0
    ):
        await watch.changed(remaining)
        latest = watch.latest()
        if latest is not None and _differs(latest.event.status, first.event.status):
            return latest.event.status, latest.body
    latest = watch.latest() or first
    return latest.event.status, latest.body


def _differs(now: RunStatus, then: RunStatus) -> bool:
    return now.is_final or (now.state, now.queue_position) != (then.state, then.queue_position)


@router.get(
    "/current",
    response_model=RunStatusResponse,
    responses={404: {"model": ErrorResponse, "description": "No run is open"}, 503: ERRORS[503]},
)
async def current_run(runs: RunsDep) -> RunStatusResponse:
    """The run that has held a slot longest (of the global scope; with scopes per user or per
    agent type, the oldest open run visibility lists), if any."""
    run = await _current(runs)
    if run is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No run is open")
    return status_body(run)


async def _current(runs: Runs) -> RunStatus | None:
    if runs.target.scope_kind == ScopeKind.GLOBAL:
        view = await runs.view(Scope(runs.target.workflow_id), 0, 0)
        held = [slot.run_id for slot in (view.slots if view else []) if slot.run_id]
    else:
        held = await runs.open_runs()
    statuses = await asyncio.gather(*(runs.status(run_id) for run_id in held[:CURRENT_LOOKED_AT]))
    open_runs = [run for run in statuses if not run.is_final]
    return min(open_runs, key=_since, default=None)


def _since(run: RunStatus) -> datetime:
    return run.started_at or run.queued_at or datetime.max.replace(tzinfo=UTC)
