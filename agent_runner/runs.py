"""Starting, reading, listing and cancelling runs: the singleton rule lives here and nowhere else.

Every run is one execution of :class:`AgentRunWorkflow` under one fixed workflow id. The
Temporal server refuses a second start under that id while a run is open
(``WorkflowIDConflictPolicy.FAIL``) and accepts one as soon as the previous run closed, however
it ended (``WorkflowIDReusePolicy.ALLOW_DUPLICATE``). That check and the start are one atomic
server operation, across every API replica, worker and other client: there is no lock of ours
to take, leak or expire.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from temporalio.api.enums.v1 import PendingActivityState
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowHistoryEventFilterType,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from agent_runner import search_attributes
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
_BAD_PAGE_TOKEN_DETAIL = "page_token is not a token this service returned"  # noqa: S105


class RunState(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"
    ERROR = "ERROR"


# What visibility can say of a run without describing it; open runs need a describe.
_CLOSED_STATES = {
    WorkflowExecutionStatus.COMPLETED: RunState.DONE,
    WorkflowExecutionStatus.FAILED: RunState.ERROR,
    WorkflowExecutionStatus.CANCELED: RunState.ERROR,
    WorkflowExecutionStatus.TERMINATED: RunState.ERROR,
    WorkflowExecutionStatus.TIMED_OUT: RunState.ERROR,
}
_STATE_QUERIES = {
    RunState.PENDING: "ExecutionStatus = 'Running'",
    RunState.RUNNING: "ExecutionStatus = 'Running'",
    RunState.DONE: "ExecutionStatus = 'Completed'",
    RunState.ERROR: ("ExecutionStatus IN ('Failed', 'Canceled', 'Terminated', 'TimedOut')"),
}


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


@dataclass(frozen=True)
class RunSummary:
    """A run as the list shows it; its result and error are on its status."""

    run_id: str
    agent_type: str | None
    user_id: str | None
    state: RunState
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class RunPage:
    runs: list[RunSummary]
    next_page_token: str | None


class AgentBusyError(Exception):
    """Another run holds the singleton; ``running_run_id`` is that run."""

    def __init__(self, running_run_id: str | None) -> None:
        super().__init__("An agent is already running, please retry later")
        self.running_run_id = running_run_id


class IdempotencyKeyReusedError(ValueError):
    """The idempotency key was used before with a different request."""


class RunNotFoundError(LookupError):
    """No run of this workflow id has that run id."""


class RunFinishedError(Exception):
    """The run has already ended, so it cannot be cancelled."""


class InvalidPageTokenError(ValueError):
    """The page token is not one this service handed out."""


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


def _fingerprint(run_input: AgentRunInput) -> str:
    return hashlib.sha256(f"{run_input.agent_type}\n{run_input.user_id}".encode()).hexdigest()


async def start_agent_run(
    client: Client,
    agent_type: str,
    user_id: str | uuid.UUID,
    *,
    target: RunTarget = RunTarget(),
    policy: RunPolicy = RunPolicy(),
    idempotency_key: str | None = None,
) -> str:
    """Start a run and return its run id.

    With an ``idempotency_key``, a repeat of the same request returns the run the key first
    started, open or finished (while the namespace retains it), instead of a new run or a busy
    error; the same key with another request raises :class:`IdempotencyKeyReusedError`.

    Raises :class:`UnsupportedAgentTypeError` / :class:`InvalidRunInputError` (both
    ``ValueError``) for bad input, :class:`AgentBusyError` while another run is open, and
    :class:`TemporalUnavailableError` when the server cannot be reached.
    """
    run_input = parse_run_input(
        {"agent_type": agent_type, "user_id": str(user_id), "policy": policy}
    )
    fingerprint = _fingerprint(run_input)
    memo: dict[str, Any] = {"agent_type": run_input.agent_type, "user_id": run_input.user_id}
    attributes: list[SearchAttributePair[str]] = [
        SearchAttributePair(search_attributes.AGENT_TYPE, run_input.agent_type),
        SearchAttributePair(search_attributes.USER_ID, run_input.user_id),
    ]
    with _temporal_call():
        if idempotency_key is not None:
            earlier = await _run_with_idempotency_key(client, target, idempotency_key)
            if earlier is not None:
                return await _same_request(earlier, idempotency_key, fingerprint)
            memo |= {"idempotency_key": idempotency_key, "request_fingerprint": fingerprint}
            attributes.append(
                SearchAttributePair(search_attributes.IDEMPOTENCY_KEY, idempotency_key)
            )
        try:
            handle = await client.start_workflow(
                AgentRunWorkflow.run,
                run_input,
                id=target.workflow_id,
                task_queue=target.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                memo=memo,
                search_attributes=TypedSearchAttributes(attributes),
                static_summary=run_summary(run_input.agent_type, run_input.user_id),
                rpc_timeout=target.rpc_timeout,
            )
        except WorkflowAlreadyStartedError as err:
            if idempotency_key is not None and err.run_id:
                # A concurrent request with the same key may have started the open run.
                holder = await _handle(client, target, err.run_id).describe(
                    rpc_timeout=target.rpc_timeout
                )
                if (await holder.memo()).get("idempotency_key") == idempotency_key:
                    return await _same_request(holder, idempotency_key, fingerprint)
            raise AgentBusyError(err.run_id) from None
    assert handle.result_run_id is not None
    return handle.result_run_id


async def _run_with_idempotency_key(
    client: Client, target: RunTarget, key: str
) -> WorkflowExecution | None:
    query = (
        f"WorkflowId = '{target.workflow_id}' AND "
        f"{search_attributes.IDEMPOTENCY_KEY.name} = '{key}'"
    )
    async for execution in client.list_workflows(query, limit=1, rpc_timeout=target.rpc_timeout):
        return execution
    return None


async def _same_request(execution: WorkflowExecution, key: str, fingerprint: str) -> str:
    if (await execution.memo()).get("request_fingerprint") != fingerprint:
        raise IdempotencyKeyReusedError(
            f"Idempotency-Key {key!r} was already used with a different request"
        )
    return execution.run_id


def _handle(
    client: Client, target: RunTarget, run_id: str | None
) -> WorkflowHandle[Any, AgentRunResult]:
    return client.get_workflow_handle(target.workflow_id, run_id=run_id, result_type=AgentRunResult)


async def _describe(
    handle: WorkflowHandle[Any, Any], target: RunTarget
) -> WorkflowExecutionDescription:
    try:
        return await handle.describe(rpc_timeout=target.rpc_timeout)
    except RPCError as err:
        if err.status in _NOT_FOUND:
            raise RunNotFoundError(handle.run_id) from None
        raise


async def get_run_status(
    client: Client, run_id: str | None, *, target: RunTarget = RunTarget()
) -> RunStatus:
    """Read a run's state from the server; works with no worker running.

    ``run_id=None`` reads the latest run of the workflow id.
    """
    handle = _handle(client, target, run_id)
    with _temporal_call():
        description = await _describe(handle, target)
        memo = await description.memo()
        base: dict[str, Any] = {
            "run_id": description.run_id,
            "agent_type": memo.get("agent_type"),
            "user_id": memo.get("user_id"),
            "started_at": description.start_time,
            "finished_at": description.close_time,
        }
        if description.status == WorkflowExecutionStatus.RUNNING:
            return _open_run_status(description, base)
        closed = _handle(client, target, description.run_id)
        event = await _close_event(closed, wait=False, rpc_timeout=target.rpc_timeout)
        return await _closed_run_status(client, base, event)


async def _close_event(
    handle: WorkflowHandle[Any, Any], *, wait: bool, rpc_timeout: timedelta
) -> HistoryEvent:
    """The run's close event: one RPC that carries its outcome and when it happened; with
    ``wait``, the server holds the call until the run closes (a long poll)."""
    async for event in handle.fetch_history_events(
        wait_new_event=wait,
        event_filter_type=WorkflowHistoryEventFilterType.CLOSE_EVENT,
        rpc_timeout=rpc_timeout,
    ):
        return event
    raise RunNotFoundError(handle.run_id)


async def _closed_run_status(
    client: Client, base: dict[str, Any], event: HistoryEvent
) -> RunStatus:
    closed = {**base, "finished_at": event.event_time.ToDatetime(tzinfo=UTC)}
    if event.HasField("workflow_execution_completed_event_attributes"):
        [output] = await client.data_converter.decode_wrapper(
            event.workflow_execution_completed_event_attributes.result, [AgentRunResult]
        )
        return RunStatus(
            **closed, state=RunState.DONE, result=output.result, error=None, attempt=output.attempt
        )
    reason, attempt = "closed", 0
    if event.HasField("workflow_execution_failed_event_attributes"):
        cause = await client.data_converter.decode_failure(
            event.workflow_execution_failed_event_attributes.failure
        )
        reason, attempt = _failure_reason_and_attempt(cause)
    elif event.HasField("workflow_execution_canceled_event_attributes"):
        reason = "cancelled"
    elif event.HasField("workflow_execution_terminated_event_attributes"):
        reason = f"terminated: {event.workflow_execution_terminated_event_attributes.reason}"
    elif event.HasField("workflow_execution_timed_out_event_attributes"):
        reason = "timed out"
    return RunStatus(**closed, state=RunState.ERROR, result=None, error=reason, attempt=attempt)


async def wait_for_change(
    client: Client,
    run_id: str,
    *,
    wait: timedelta,
    target: RunTarget = RunTarget(),
    poll_interval: timedelta = timedelta(milliseconds=250),
) -> RunStatus:
    """The run's status as soon as its state changes or it finishes, at the latest after ``wait``.

    The finish arrives by Temporal's own long poll on the run's close event, so a waiting
    caller learns of it at once; PENDING -> RUNNING is noticed within ``poll_interval``.
    """
    first = await get_run_status(client, run_id, target=target)
    if first.is_final:
        return first
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait.total_seconds()
    handle = _handle(client, target, run_id)
    closed = asyncio.ensure_future(_close_event(handle, wait=True, rpc_timeout=wait))
    try:
        current = first
        while (remaining := deadline - loop.time()) > 0 and current.state == first.state:
            await asyncio.wait({closed}, timeout=min(remaining, poll_interval.total_seconds()))
            if closed.done() and closed.exception() is None:
                # What the open run's describe said still holds; the close event adds the end.
                base = {
                    "run_id": first.run_id,
                    "agent_type": first.agent_type,
                    "user_id": first.user_id,
                    "started_at": first.started_at,
                }
                with _temporal_call():
                    return await _closed_run_status(client, base, closed.result())
            current = await get_run_status(client, run_id, target=target)
        return current
    finally:
        closed.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await closed


async def get_current_run(client: Client, *, target: RunTarget = RunTarget()) -> RunStatus | None:
    """The open run, if there is one."""
    try:
        status = await get_run_status(client, None, target=target)
    except RunNotFoundError:
        return None
    return None if status.is_final else status


async def cancel_run(client: Client, run_id: str, *, target: RunTarget = RunTarget()) -> None:
    """Ask an open run to stop: its agent sees the cancellation at its next heartbeat, and the
    run ends ERROR with reason ``cancelled``."""
    handle = _handle(client, target, run_id)
    with _temporal_call():
        description = await _describe(handle, target)
        if description.status != WorkflowExecutionStatus.RUNNING:
            raise RunFinishedError(run_id)
        await handle.cancel(rpc_timeout=target.rpc_timeout)


async def list_runs(
    client: Client,
    *,
    target: RunTarget = RunTarget(),
    agent_type: str | None = None,
    user_id: str | None = None,
    state: RunState | None = None,
    limit: int = 20,
    page_token: str | None = None,
) -> RunPage:
    """Runs of the workflow id, newest first, from Temporal visibility (no database of ours).

    Runs never overlap, so visibility's order (open first, then by close time) is start order.
    ``agent_type`` must be a supported type and ``user_id`` a UUID: both are quoted into the
    query as they are.
    """
    clauses = [f"WorkflowId = '{target.workflow_id}'"]
    if agent_type is not None:
        clauses.append(f"{search_attributes.AGENT_TYPE.name} = '{agent_type}'")
    if user_id is not None:
        clauses.append(f"{search_attributes.USER_ID.name} = '{uuid.UUID(user_id)}'")
    if state is not None:
        clauses.append(_STATE_QUERIES[state])
    executions = client.list_workflows(
        " AND ".join(clauses),
        page_size=limit,
        next_page_token=_decode_page_token(page_token),
        rpc_timeout=target.rpc_timeout,
    )
    with _temporal_call():
        try:
            await executions.fetch_next_page()
        except RPCError as err:
            # Servers reject a forged token as INVALID_ARGUMENT, or (SQL visibility) UNKNOWN.
            if page_token and err.status in (RPCStatusCode.INVALID_ARGUMENT, RPCStatusCode.UNKNOWN):
                raise InvalidPageTokenError(_BAD_PAGE_TOKEN_DETAIL) from None
            raise
        runs = [
            await _summary(client, target, execution) for execution in executions.current_page or []
        ]
    if state is not None:
        runs = [run for run in runs if run.state == state]
    token = executions.next_page_token
    return RunPage(runs, base64.urlsafe_b64encode(token).decode() if token else None)


def _decode_page_token(page_token: str | None) -> bytes | None:
    if not page_token:
        return None
    try:
        return base64.b64decode(page_token.encode(), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise InvalidPageTokenError(_BAD_PAGE_TOKEN_DETAIL) from None


async def _summary(client: Client, target: RunTarget, execution: WorkflowExecution) -> RunSummary:
    memo = await execution.memo()
    closed_state = _CLOSED_STATES.get(execution.status) if execution.status else None
    if closed_state is None:
        # The one open run: only a describe tells PENDING from RUNNING.
        closed_state = (await get_run_status(client, execution.run_id, target=target)).state
    return RunSummary(
        run_id=execution.run_id,
        agent_type=memo.get("agent_type"),
        user_id=memo.get("user_id"),
        state=closed_state,
        started_at=execution.start_time,
        finished_at=execution.close_time,
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


def _failure_reason_and_attempt(cause: BaseException) -> tuple[str, int]:
    if isinstance(cause, ApplicationError):
        details = cause.details[0] if cause.details else {}
        attempt = details.get("attempt", 0) if isinstance(details, dict) else 0
        return cause.message, attempt
    return str(cause), 0


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
    "TemporalUnavailableError",
    "cancel_run",
    "get_current_run",
    "get_run_status",
    "list_runs",
    "start_agent_run",
    "wait_for_change",
]
