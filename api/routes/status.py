"""GET /agents/status/{run_id} (and its long poll) and GET /agents/current."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

from fastapi import HTTPException, Query, status
from fastapi.responses import Response
from starlette import types as asgi

from agent_runner.ids import Scope, ScopeKind
from agent_runner.logs import bind_run_context
from agent_runner.runs import RunNotFoundError, Runs, RunStatus
from api.auth import key_valid
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
STATUS_PREFIX = "/agents/status/"
JSON = "application/json"


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
            allow_inf_nan=False,
            description=(
                "Long-poll: answer as soon as the state (or queue position) changes or the run "
                f"finishes, at the latest after this many seconds (at most {MAX_WAIT_SECONDS:g})."
            ),
        ),
    ] = 0,
) -> Response:
    """Read a run's state; `result` once DONE, `error` once ERROR, `queue_position` while it
    waits in a queue."""
    known = known_answer(state, run_id, wait)
    if known is not None:
        return known
    runs = state.runs
    try:
        runs.locate(run_id)
        run, body = await _read(state, runs, run_id, wait)
    except RunNotFoundError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND_DETAIL) from None
    return _answer(state, run, body)


def known_answer(state: AppState, run_id: str, wait: float) -> Response | None:
    """The answer this process has without asking Temporal, or None: a finished run's body it
    keeps, or (no long poll) the latest status of a run it follows. The route's first step, and
    all that :class:`StatusFastPath` serves."""
    cached = state.finished_runs.get(run_id)
    if cached is not None:
        return Response(cached, media_type=JSON)
    watch = state.watchers.peek(run_id) if wait <= 0 else None
    latest = watch.latest() if watch is not None else None
    if latest is None:
        return None
    return _answer(state, latest.event.status, latest.body)


def _answer(state: AppState, run: RunStatus, body: bytes) -> Response:
    bind_run_context(agent_type=run.agent_type, user_id=run.user_id, run_id=run.run_id)
    if state.finished_runs.remember(run, body):
        state.metrics.runs_finished.labels(run.state).inc()
    return Response(body, media_type=JSON)


class StatusFastPath:
    """ASGI middleware: a plain ``GET /agents/status/{run_id}`` (no query, a valid key when keys
    are set) that :func:`known_answer` can answer is answered here, without FastAPI's routing
    and dependencies; everything else goes on to the route, which starts with the same
    :func:`known_answer`. So both give the same bytes, and the route alone refuses, validates
    and asks Temporal."""

    def __init__(self, app: asgi.ASGIApp, state: AppState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        path: str = scope.get("path", "")
        if (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and path.startswith(STATUS_PREFIX)
            and not scope["query_string"]
        ):
            run_id = path[len(STATUS_PREFIX) :]
            if run_id and "/" not in run_id and await key_valid(scope, self.state.api_keys):
                known = known_answer(self.state, run_id, 0)
                if known is not None:
                    await known(scope, receive, send)
                    return
        await self.app(scope, receive, send)


async def _read(state: AppState, runs: Runs, run_id: str, wait: float) -> tuple[RunStatus, bytes]:
    """The run's status now (``wait`` 0: from Temporal, and the next reads from a watcher started
    now), or once it changes (from this process's watcher of the run)."""
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
