"""Request and response bodies, declared so the OpenAPI document is exact."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from agent_runner.runs import RunState
from agent_runner.validation import SUPPORTED_AGENT_TYPES


class RunRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"agent_type": "policy-checker", "user_id": "9b64a3a7-f8e4-4f06-8e57-73b50b042f29"}
            ]
        }
    )

    # A plain string, not an enum, so an unknown type is the contract's 400, not a 422.
    agent_type: str = Field(
        description="Which agent to run.",
        json_schema_extra={"enum": list(SUPPORTED_AGENT_TYPES)},
        max_length=100,
    )
    user_id: UUID = Field(description="The user the agent works for.")


class RunAccepted(BaseModel):
    run_id: str = Field(description="Temporal run id of this run; opaque.")


class RunStatusResponse(BaseModel):
    run_id: str
    agent_type: str | None = Field(
        description="None only for a run started elsewhere with bad input."
    )
    user_id: str | None
    state: RunState = Field(
        description=(
            "PENDING: accepted, no attempt started yet (e.g. no worker). RUNNING: an attempt "
            "is executing or waiting to retry. DONE: `result` holds the output. ERROR: `error` "
            "says why."
        )
    )
    result: Any = Field(
        description=(
            'policy-checker: "approved" or "rejected". document-extractor: an object with '
            "`document`, `pages` and the extracted `fields`. None until DONE."
        )
    )
    error: str | None = Field(description="Why the run ended in ERROR.")
    attempt: int = Field(description="The agent attempt running or that ended the run; 0 if none.")
    started_at: datetime | None = Field(description="When the run was accepted (UTC).")
    finished_at: datetime | None = Field(description="When the run ended (UTC).")


class ErrorResponse(BaseModel):
    detail: str


class BusyResponse(BaseModel):
    detail: str = Field(examples=["An agent is already running, please retry later"])
    running_run_id: str | None = Field(description="The open run; its status is at `Location`.")


class RunSummaryResponse(BaseModel):
    run_id: str
    agent_type: str | None
    user_id: str | None
    state: RunState
    started_at: datetime | None
    finished_at: datetime | None


class RunListResponse(BaseModel):
    runs: list[RunSummaryResponse] = Field(description="Newest first.")
    next_page_token: str | None = Field(
        description="Pass as `page_token` for the next page; null on the last page."
    )


class CancelResponse(BaseModel):
    run_id: str
    state: RunState = Field(
        description="ERROR once the run has ended; PENDING or RUNNING while its agent stops."
    )
    detail: str


class HealthResponse(BaseModel):
    status: str
