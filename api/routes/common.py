"""What the /agents routers share: the prefix, error responses, the status body."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, status

from agent_runner.ids import RunTarget, Scope, ScopeKind, scope_named
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


# What a ``scope`` must be, by the deployment's kind of scope.
SCOPE_EXPECTED = {
    ScopeKind.GLOBAL: "`global`: this deployment has one scope",
    ScopeKind.USER_ID: "a user id, a UUID in lower case",
    ScopeKind.AGENT_TYPE: "an agent type, such as `policy-checker`",
}


def named_scope(target: RunTarget, label: str) -> Scope:
    """The deployment's scope called ``label``, or a 422 saying what a scope is here."""
    named = scope_named(target.workflow_id, target.scope_kind, label)
    if named is None:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"scope must be {SCOPE_EXPECTED[target.scope_kind]} "
            f"(AGENT_SCOPE={target.scope_kind.value})",
        )
    return named


def status_url(run_id: str) -> str:
    return f"{PREFIX}/status/{run_id}"


def status_body(run: RunStatus) -> RunStatusResponse:
    return status_response(run)
