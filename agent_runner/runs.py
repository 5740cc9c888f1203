"""Starting a run and reading its status: the singleton rule lives here and nowhere else.

Every run is one execution of :class:`AgentRunWorkflow` under one fixed workflow id. The
Temporal server refuses a second start under that id while a run is open
(``WorkflowIDConflictPolicy.FAIL``) and accepts one as soon as the previous run closed, however
it ended (``WorkflowIDReusePolicy.ALLOW_DUPLICATE``). That check and the start are one atomic
server operation, across every API replica, worker and other client: there is no lock of ours
to take, leak or expire.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import (
    ApplicationError,
    CancelledError,
    TerminatedError,
    TimeoutError,
    WorkflowAlreadyStartedError,
)
from temporalio.service import RPCError, RPCStatusCode

from agent_runner.models import AgentRunInput, AgentRunResult, RunPolicy
from agent_runner.validation import parse_run_input
from workflows import AgentRunWorkflow

DEFAULT_WORKFLOW_ID = "agent-runner"
DEFAULT_TASK_QUEUE = "agent-runner"
# Events of a run whose agent activity was never scheduled: started, workflow task scheduled,
# started, completed. A longer history with no pending activity means the agent has finished
# and the workflow is completing.
_EVENTS_BEFORE_AGENT = 4
_UNAVAILABLE = {RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED}
_NOT_FOUND = {RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT}


class RunState(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"
    ERROR = "ERROR"


@dataclass(frozen=True)
class RunTarget:
    """Where the singleton lives: the fixed workflow id and the workers' task queue."""

    workflow_id: str = DEFAULT_WORKFLOW_ID
    task_queue: str = DEFAULT_TASK_QUEUE
    rpc_timeout: timedelta = timedelta(seconds=2)


@dataclass(frozen=True)
class RunStatus:
    run_id: str
    agent_type: str | None
    user_id: str | None
    state: RunState
    result: Any
    error: str | None
    attempt: int
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def is_final(self) -> bool:
        return self.state in (RunState.DONE, RunState.ERROR)


class AgentBusyError(Exception):
    """Another run holds the singleton; ``running_run_id`` is that run."""

    def __init__(self, running_run_id: str | None) -> None:
        super().__init__("An agent is already running, please retry later")
        self.running_run_id = running_run_id


class RunNotFoundError(LookupError):
    """No run of this workflow id has that run id."""


class TemporalUnavailableError(Exception):
    """The Temporal server could not be reached in time."""


@contextmanager
def _temporal_call() -> Iterator[None]:
    """Turn "server unreachable" into one typed error, whatever layer reports it."""
    try:
        yield
    except RPCError as err:
        if err.status in _UNAVAILABLE:
            raise TemporalUnavailableError(err.message) from err
        raise
    except RuntimeError as err:
        # A lazy client that has never reached its server raises a plain RuntimeError.
        raise TemporalUnavailableError(str(err)) from err


def run_summary(agent_type: str, user_id: str) -> str:
    return f"{agent_type} for {user_id}"


async def start_agent_run(
    client: Client,
    agent_type: str,
    user_id: str | uuid.UUID,
    *,
    target: RunTarget = RunTarget(),
    policy: RunPolicy = RunPolicy(),
) -> str:
    """Start a run and return its run id.

    Raises :class:`UnsupportedAgentTypeError` / :class:`InvalidRunInputError` (both
    ``ValueError``) for bad input, :class:`AgentBusyError` while another run is open, and
    :class:`TemporalUnavailableError` when the server cannot be reached.
    """
    run_input = parse_run_input(
        {"agent_type": agent_type, "user_id": str(user_id), "policy": policy}
    )
    with _temporal_call():
        try:
            handle = await client.start_workflow(
                AgentRunWorkflow.run,
                run_input,
                id=target.workflow_id,
                task_queue=target.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                memo={"agent_type": run_input.agent_type, "user_id": run_input.user_id},
                static_summary=run_summary(run_input.agent_type, run_input.user_id),
                rpc_timeout=target.rpc_timeout,
            )
        except WorkflowAlreadyStartedError as err:
            raise AgentBusyError(err.run_id) from None
    assert handle.result_run_id is not None
    return handle.result_run_id


async def get_run_status(
    client: Client, run_id: str, *, target: RunTarget = RunTarget()
) -> RunStatus:
    """Read a run's state from the server; works with no worker running."""
    handle = client.get_workflow_handle(
        target.workflow_id, run_id=run_id, result_type=AgentRunResult
    )
    with _temporal_call():
        try:
            description = await handle.describe(rpc_timeout=target.rpc_timeout)
        except RPCError as err:
            if err.status in _NOT_FOUND:
                raise RunNotFoundError(run_id) from None
            raise
        memo = await description.memo()
        base: dict[str, Any] = {
            "run_id": run_id,
            "agent_type": memo.get("agent_type"),
            "user_id": memo.get("user_id"),
            "started_at": description.start_time,
            "finished_at": description.close_time,
        }
        if description.status == WorkflowExecutionStatus.RUNNING:
            return _open_run_status(description, base)
        try:
            output = await handle.result(follow_runs=False, rpc_timeout=target.rpc_timeout)
        except WorkflowFailureError as err:
            reason, attempt = _closed_run_failure(err)
            return RunStatus(
                **base, state=RunState.ERROR, result=None, error=reason, attempt=attempt
            )
    return RunStatus(
        **base, state=RunState.DONE, result=output.result, error=None, attempt=output.attempt
    )


def _open_run_status(description: WorkflowExecutionDescription, base: dict[str, Any]) -> RunStatus:
    pending = description.raw_description.pending_activities
    if pending:
        activity = pending[0]
        has_run = (
            activity.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
            or activity.attempt > 1
        )
        state = RunState.RUNNING if has_run else RunState.PENDING
        attempt = activity.attempt if has_run else 0
    elif description.history_length > _EVENTS_BEFORE_AGENT:
        state, attempt = RunState.RUNNING, 0
    else:
        state, attempt = RunState.PENDING, 0
    return RunStatus(**base, state=state, result=None, error=None, attempt=attempt)


def _closed_run_failure(err: WorkflowFailureError) -> tuple[str, int]:
    cause = err.cause
    if isinstance(cause, ApplicationError):
        details = cause.details[0] if cause.details else {}
        attempt = details.get("attempt", 0) if isinstance(details, dict) else 0
        return cause.message, attempt
    if isinstance(cause, CancelledError):
        return "cancelled", 0
    if isinstance(cause, TerminatedError):
        return f"terminated: {cause.message}", 0
    if isinstance(cause, TimeoutError):
        return "timed out", 0
    return str(cause or err), 0


__all__ = [
    "AgentBusyError",
    "AgentRunInput",
    "RunNotFoundError",
    "RunPolicy",
    "RunState",
    "RunStatus",
    "RunTarget",
    "TemporalUnavailableError",
    "get_run_status",
    "start_agent_run",
]
