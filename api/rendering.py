"""A run's status as the API renders it: one place, for responses, streams and caches."""

from __future__ import annotations

from agent_runner.runs import RunStatus
from api.schemas import RunStatusResponse


def status_response(run: RunStatus) -> RunStatusResponse:
    return RunStatusResponse.model_validate(run, from_attributes=True)


def render_status(run: RunStatus) -> bytes:
    return status_response(run).model_dump_json().encode()
