"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import contextlib
from typing import Any

from fastapi import APIRouter, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from temporalio.service import RPCError

from agent_runner.connection import readiness_problems
from agent_runner.runs import TemporalUnavailableError
from api.deps import StateDep
from api.schemas import ErrorResponse, HealthResponse

probes = APIRouter(tags=["operations"])
NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorResponse, "description": "Not ready, and why"}
}
metrics_router = APIRouter(tags=["operations"])


# HEAD too: load balancers and uptime checkers often probe with it.
@probes.head("/healthz", response_model=HealthResponse)
@probes.get("/healthz", response_model=HealthResponse)
async def healthz() -> HealthResponse:
    """The process is up and serving (no Temporal call)."""
    return HealthResponse(status="ok")


@probes.head("/readyz", response_model=HealthResponse, responses=NOT_READY)
@probes.get("/readyz", response_model=HealthResponse, responses=NOT_READY)
async def readyz(state: StateDep) -> HealthResponse | JSONResponse:
    """Temporal is reachable, the namespace exists and the search attributes are registered."""
    try:
        runs = state.runs
        problems = await readiness_problems(runs.client, runs.target.rpc_timeout)
    except TemporalUnavailableError as err:
        problems = [str(err)]
    except RPCError as err:
        problems = [f"Temporal is unavailable: {err.message}"]
    if problems:
        return JSONResponse(
            {"detail": "; ".join(problems)}, status_code=status.HTTP_503_SERVICE_UNAVAILABLE
        )
    return HealthResponse(status="ready")


@metrics_router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
async def metrics(state: StateDep) -> Response:
    """Prometheus metrics of this API process."""
    with contextlib.suppress(TemporalUnavailableError):
        await state.queue_gauges.refresh(state.runs)
    state.temporal_requests.drain()
    state.metrics.watched_runs.set(state.watchers.count())
    state.metrics.stream_subscribers.set(state.watchers.subscribers())
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
