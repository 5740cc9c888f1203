"""Listing runs from Temporal visibility (no database of ours), newest first, with filters and
page tokens this service signs, so a token it did not issue is refused.

A page is the runs whose workflow started on a slot (visibility lists their executions); the
first page also carries the runs waiting in the queues (their coordinators say, one query each
for the scopes visibility shows with runs waiting). Open runs are described, a page's at once,
within the call's budget.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

from temporalio.client import WorkflowExecution, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from agent_runner import search_attributes
from agent_runner.contract import RUN_WORKFLOW, SCOPE_WORKFLOW, RunState
from agent_runner.executions import describe_view
from agent_runner.ids import parse_workflow_id
from agent_runner.runs.errors import InvalidPageTokenError, temporal_call
from agent_runner.runs.service import Runs
from agent_runner.status import run_status

_PROCESS_KEY = secrets.token_bytes(32)
BAD_PAGE_TOKEN_DETAIL = "page_token is not a token this service returned"  # noqa: S105
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
    RunState.ERROR: "ExecutionStatus IN ('Failed', 'Canceled', 'Terminated', 'TimedOut')",
}
# Scopes whose waiting runs the first page shows at most.
_QUEUES_SHOWN = 20


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


def _query(runs: Runs, agent_type: str | None, user_id: str | None, state: RunState | None) -> str:
    clauses = [
        f"WorkflowType = '{RUN_WORKFLOW}'",
        f"WorkflowId STARTS_WITH '{runs.target.workflow_id}'",
        f"{search_attributes.AGENT_RUN_ID.name} IS NOT NULL",
    ]
    if agent_type is not None:
        clauses.append(f"{search_attributes.AGENT_TYPE.name} = '{agent_type}'")
    if user_id is not None:
        clauses.append(f"{search_attributes.USER_ID.name} = '{uuid.UUID(user_id)}'")
    if state is not None:
        clauses.append(_STATE_QUERIES[state])
    return " AND ".join(clauses)


async def list_runs(
    runs: Runs,
    *,
    token_key: bytes | None = None,
    agent_type: str | None = None,
    user_id: str | None = None,
    state: RunState | None = None,
    limit: int = 20,
    page_token: str | None = None,
) -> RunPage:
    """Runs newest first (the first page: the runs waiting in queues first). ``agent_type``
    must be a supported type and ``user_id`` a UUID: both are quoted into the query."""
    token_key = token_key or _PROCESS_KEY
    executions = runs.client.list_workflows(
        _query(runs, agent_type, user_id, state),
        page_size=limit,
        next_page_token=_verified(page_token, token_key),
        rpc_timeout=runs.target.rpc_timeout,
    )
    page: list[RunSummary] = []
    with temporal_call():
        if page_token is None and state in (None, RunState.PENDING):
            page += await _queued(runs, agent_type, user_id)
        try:
            await executions.fetch_next_page()
        except RPCError as err:
            # A token of ours, but for another query: the server refuses it.
            if page_token and err.status in (RPCStatusCode.INVALID_ARGUMENT, RPCStatusCode.UNKNOWN):
                raise InvalidPageTokenError(BAD_PAGE_TOKEN_DETAIL) from None
            raise
        found = await asyncio.gather(
            *(_summary(runs, execution) for execution in executions.current_page or [])
        )
    page += [summary for summary in found if summary is not None]
    if state is not None:
        page = [run for run in page if run.state == state]
    token = executions.next_page_token
    return RunPage(page, _signed(token, token_key) if token else None)


async def _summary(runs: Runs, execution: WorkflowExecution) -> RunSummary | None:
    place = parse_workflow_id(runs.target.workflow_id, execution.id)
    memo = await execution.memo()
    run_id = memo.get("run_id")
    if place is None or place.slot is None or not isinstance(run_id, str):
        return None
    state = _CLOSED_STATES.get(execution.status) if execution.status else None
    if state is None:
        # An open run: only a describe tells PENDING from RUNNING.
        handle = runs.client.get_workflow_handle(execution.id, run_id=execution.run_id)
        view = await describe_view(
            runs.client, await handle.describe(rpc_timeout=runs.target.rpc_timeout)
        )
        status = run_status(run_id, None, view)
        state = status.state if status else RunState.RUNNING
    return RunSummary(
        run_id=run_id,
        agent_type=_text(memo.get("agent_type")),
        user_id=_text(memo.get("user_id")),
        state=state,
        started_at=execution.start_time,
        finished_at=execution.close_time,
    )


async def _queued(runs: Runs, agent_type: str | None, user_id: str | None) -> list[RunSummary]:
    """The runs waiting in the deployment's queues, newest first."""
    query = (
        f"WorkflowType = '{SCOPE_WORKFLOW}' AND ExecutionStatus = 'Running' AND "
        f"{search_attributes.QUEUE_DEPTH.name} > 0 AND "
        f"WorkflowId STARTS_WITH '{runs.target.workflow_id}'"
    )
    waiting: list[RunSummary] = []
    async for coordinator in runs.client.list_workflows(
        query, limit=_QUEUES_SHOWN, rpc_timeout=runs.target.rpc_timeout
    ):
        place = parse_workflow_id(runs.target.workflow_id, coordinator.id)
        if place is None or place.slot is not None:
            continue
        view = await runs.view(place.scope, 0, 100)
        for record in view.queued if view else []:
            if agent_type not in (None, record.agent_type):
                continue
            if user_id is not None and str(uuid.UUID(user_id)) != record.user_id:
                continue
            waiting.append(
                RunSummary(
                    run_id=record.run_id,
                    agent_type=record.agent_type,
                    user_id=record.user_id,
                    state=RunState.PENDING,
                    started_at=record.queued_at,
                    finished_at=None,
                )
            )
    return sorted(waiting, key=lambda run: run.started_at or datetime.min, reverse=True)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _signed(token: bytes, key: bytes) -> str:
    body = base64.urlsafe_b64encode(token).decode()
    return f"{body}.{_mac(body, key)}"


def _verified(page_token: str | None, key: bytes) -> bytes | None:
    if not page_token:
        return None
    body, _, mac = page_token.rpartition(".")
    if not body or not hmac.compare_digest(mac, _mac(body, key)):
        raise InvalidPageTokenError(BAD_PAGE_TOKEN_DETAIL)
    try:
        return base64.b64decode(body.encode(), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise InvalidPageTokenError(BAD_PAGE_TOKEN_DETAIL) from None


def _mac(body: str, key: bytes) -> str:
    digest = hmac.new(key, body.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")


def token_key_from(secret: str) -> bytes:
    """A signing key for page tokens from a configured secret."""
    return hashlib.sha256(json.dumps(["agent-runner page tokens", secret]).encode()).digest()
