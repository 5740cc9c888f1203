"""Runs: start one (its scope's coordinator decides), read its status, follow it, cancel it,
list them, see a scope's queue.

This is the public Python API other services use; the REST API is built on it. It reaches the
workflows by their names and the typed messages of :mod:`agent_runner.contract`, so nothing
here imports workflow code.
"""

from agent_runner.contract import OnBusy, RunPolicy, RunState
from agent_runner.ids import RunTarget
from agent_runner.runs.errors import (
    AgentBusyError,
    IdempotencyKeyReusedError,
    InvalidPageTokenError,
    QueueFullError,
    RunFinishedError,
    RunNotFoundError,
    TemporalUnavailableError,
)
from agent_runner.runs.gate import StartsBusyError
from agent_runner.runs.service import (
    Runs,
    StartOutcome,
    StartRequest,
    start_agent_run,
    start_request,
)
from agent_runner.status import RunStatus

__all__ = [
    "AgentBusyError",
    "IdempotencyKeyReusedError",
    "InvalidPageTokenError",
    "OnBusy",
    "QueueFullError",
    "RunFinishedError",
    "RunNotFoundError",
    "RunPolicy",
    "RunState",
    "RunStatus",
    "RunTarget",
    "Runs",
    "StartOutcome",
    "StartRequest",
    "StartsBusyError",
    "TemporalUnavailableError",
    "start_agent_run",
    "start_request",
]
