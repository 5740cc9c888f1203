"""Runs: start one (the singleton rule), read its status, wait for a change, list, cancel.

This is the public Python API other services use; the REST API is built on it. It sits above
the workflow and starts it by its type name, so nothing here imports workflow code.
"""

from agent_runner.models import AgentRunInput, RunPolicy
from agent_runner.runs.errors import (
    AgentBusyError,
    IdempotencyKeyReusedError,
    InvalidPageTokenError,
    RunFinishedError,
    RunNotFoundError,
    TemporalUnavailableError,
)
from agent_runner.runs.listing import list_runs
from agent_runner.runs.read import cancel_run, get_current_run, get_run_status, wait_for_change
from agent_runner.runs.start import (
    StartRequest,
    run_summary,
    start_agent_run,
    start_request,
    start_run,
)
from agent_runner.runs.types import RunPage, RunState, RunStatus, RunSummary, RunTarget

__all__ = [
    "AgentBusyError",
    "AgentRunInput",
    "IdempotencyKeyReusedError",
    "InvalidPageTokenError",
    "RunFinishedError",
    "RunNotFoundError",
    "RunPage",
    "RunPolicy",
    "RunState",
    "RunStatus",
    "RunSummary",
    "RunTarget",
    "StartRequest",
    "TemporalUnavailableError",
    "cancel_run",
    "get_current_run",
    "get_run_status",
    "list_runs",
    "run_summary",
    "start_agent_run",
    "start_request",
    "start_run",
    "wait_for_change",
]
