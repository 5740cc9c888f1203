"""Runs: start one (the singleton rule), read its status, wait for a change, list, cancel.

This is the public Python API other services use; the REST API is built on it. It sits above
the workflow and starts it by its type name, so nothing here imports workflow code.
"""

from agent_runner.models import AgentRunInput, RunPolicy
from agent_runner.records import run_summary
from agent_runner.runs.cancel import cancel_run
from agent_runner.runs.enqueue import enqueue_runs
from agent_runner.runs.errors import (
    AgentBusyError,
    IdempotencyKeyReusedError,
    InvalidPageTokenError,
    QueueFullError,
    RunFinishedError,
    RunNotFoundError,
    TemporalUnavailableError,
)
from agent_runner.runs.listing import list_runs
from agent_runner.runs.queue_view import QueueView, get_queue
from agent_runner.runs.start import (
    OnBusy,
    StartOutcome,
    StartRequest,
    start_agent_run,
    start_request,
    start_run,
    start_run_detailed,
)
from agent_runner.runs.status import get_current_run, get_run_status
from agent_runner.runs.types import RunPage, RunState, RunStatus, RunSummary, RunTarget
from agent_runner.runs.waiting import wait_for_change, wait_for_end

__all__ = [
    "AgentBusyError",
    "AgentRunInput",
    "IdempotencyKeyReusedError",
    "InvalidPageTokenError",
    "OnBusy",
    "QueueFullError",
    "QueueView",
    "RunFinishedError",
    "RunNotFoundError",
    "RunPage",
    "RunPolicy",
    "RunState",
    "RunStatus",
    "RunSummary",
    "RunTarget",
    "StartOutcome",
    "StartRequest",
    "TemporalUnavailableError",
    "cancel_run",
    "enqueue_runs",
    "get_current_run",
    "get_queue",
    "get_run_status",
    "list_runs",
    "run_summary",
    "start_agent_run",
    "start_request",
    "start_run",
    "start_run_detailed",
    "wait_for_change",
    "wait_for_end",
]
