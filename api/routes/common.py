"""What the /agents routers share: the prefix, error responses, the status body."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from agent_runner.runs import RunStatus
from api.errors import JsonBodyRoute
from api.rendering import status_response
from api.schemas import ErrorResponse, RunStatusResponse

PREFIX = "/agents"
NOT_FOUND_DETAIL = "No run with this run_id"
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such run"},
    415: {"model": ErrorResponse, "description": "A body not sent as application/json"},
    503: {"model": ErrorResponse, "description": "Temporal cannot be reached"},
}


def agents_router() -> APIRouter:
    return APIRouter(prefix=PREFIX, tags=["agents"], route_class=JsonBodyRoute)


def status_url(run_id: str) -> str:
    return f"{PREFIX}/status/{run_id}"


def status_body(run: RunStatus) -> RunStatusResponse:
    return status_response(run)
