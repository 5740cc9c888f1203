"""Listing runs from Temporal visibility (no database of ours), newest first, with filters and
page tokens this service signs, so a token it did not issue is refused."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from temporalio.client import Client, WorkflowExecution, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from agent_runner import search_attributes
from agent_runner.locations import parse_workflow_id
from agent_runner.queue_types import QUEUE_WORKFLOW_TYPE
from agent_runner.runs.errors import InvalidPageTokenError, temporal_call
from agent_runner.runs.idempotency import client_run_id
from agent_runner.runs.slot_status import slot_run_status
from agent_runner.runs.types import RunPage, RunState, RunSummary, RunTarget

_PROCESS_KEY = secrets.token_bytes(32)
BAD_PAGE_TOKEN_DETAIL = "page_token is not a token this service returned"  # noqa: S105
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
    RunState.DONE: "ExecutionStatus IN ('Completed', 'ContinuedAsNew')",
    RunState.ERROR: (
        "ExecutionStatus IN ('Failed', 'Canceled', 'Terminated', 'TimedOut', 'ContinuedAsNew')"
    ),
}


def _query(
    target: RunTarget, agent_type: str | None, user_id: str | None, state: RunState | None
) -> str:
    clauses = [
        f"WorkflowId STARTS_WITH '{target.workflow_id}'",
        f"WorkflowType != '{QUEUE_WORKFLOW_TYPE}'",
    ]
    if agent_type is not None:
        clauses.append(f"{search_attributes.AGENT_TYPE.name} = '{agent_type}'")
    if user_id is not None:
        clauses.append(f"{search_attributes.USER_ID.name} = '{uuid.UUID(user_id)}'")
    if state is not None:
        clauses.append(_STATE_QUERIES[state])
    return " AND ".join(clauses)


async def list_runs(
    client: Client,
    *,
    target: RunTarget,
    token_key: bytes | None = None,
    agent_type: str | None = None,
    user_id: str | None = None,
    state: RunState | None = None,
    limit: int = 20,
    page_token: str | None = None,
) -> RunPage:
    """Runs newest first: on the first page the runs waiting in queues, then every run that got
    a slot, from visibility. ``agent_type`` must be a supported type and ``user_id`` a UUID:
    both are quoted into the query as they are. ``token_key`` signs the page tokens (by default a
    key of this process's own, so only this process takes them back)."""
    token_key = token_key or _PROCESS_KEY
    executions = client.list_workflows(
        _query(target, agent_type, user_id, state),
        page_size=limit,
        next_page_token=_verified(page_token, token_key),
        rpc_timeout=target.rpc_timeout,
    )
    runs: list[RunSummary] = []
    with temporal_call():
        if page_token is None and state in (None, RunState.PENDING):
            runs += await _queued(client, target, agent_type, user_id)
        try:
            await executions.fetch_next_page()
        except RPCError as err:
            # A token of ours, but for another query: the server refuses it.
            if page_token and err.status in (RPCStatusCode.INVALID_ARGUMENT, RPCStatusCode.UNKNOWN):
                raise InvalidPageTokenError(BAD_PAGE_TOKEN_DETAIL) from None
            raise
        for execution in executions.current_page or []:
            summary = await _summary(client, target, execution)
            if summary is not None:
                runs.append(summary)
    if state is not None:
        runs = [run for run in runs if run.state == state]
    token = executions.next_page_token
    return RunPage(runs, _signed(token, token_key) if token else None)


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


async def _summary(
    client: Client, target: RunTarget, execution: WorkflowExecution
) -> RunSummary | None:
    where = parse_workflow_id(target.workflow_id, execution.id)
    if where is None or where[1] is None:
        return None  # another deployment's id that shares our prefix, or a queue
    memo = await execution.memo()
    run_id = await client_run_id(target, execution)
    if run_id is None:
        return None
    state = _CLOSED_STATES.get(execution.status) if execution.status else None
    if execution.status == WorkflowExecutionStatus.CONTINUED_AS_NEW:
        outcome = memo.get("outcome")
        state = RunState.DONE if _outcome_state(outcome) == "DONE" else RunState.ERROR
    if state is None:
        # An open run: only a describe tells PENDING from RUNNING.
        state = (await slot_run_status(client, target, execution.id, execution.run_id)).state
    return RunSummary(
        run_id=run_id,
        agent_type=memo.get("agent_type"),
        user_id=memo.get("user_id"),
        state=state,
        started_at=execution.start_time,
        finished_at=execution.close_time,
    )


async def _queued(
    client: Client, target: RunTarget, agent_type: str | None, user_id: str | None
) -> list[RunSummary]:
    """The runs waiting in every open queue of the deployment, newest first."""
    query = (
        f"WorkflowType = '{QUEUE_WORKFLOW_TYPE}' AND ExecutionStatus = 'Running' AND "
        f"WorkflowId STARTS_WITH '{target.workflow_id}'"
    )
    waiting: list[tuple[str, RunSummary]] = []
    async for queue in client.list_workflows(query, rpc_timeout=target.rpc_timeout):
        memo = await queue.memo()
        for key, where in memo.items():
            if not key.startswith("r:") or not _waiting(where, agent_type, user_id):
                continue
            waiting.append((where["enqueued_at"], _queued_summary(key[2:], where)))
    return [summary for _, summary in sorted(waiting, key=lambda pair: pair[0], reverse=True)]


def _waiting(where: object, agent_type: str | None, user_id: str | None) -> bool:
    return (
        isinstance(where, dict)
        and where.get("state") == "queued"
        and agent_type in (None, where.get("agent_type"))
        and (user_id is None or str(uuid.UUID(user_id)) == where.get("user_id"))
    )


def _queued_summary(run_id: str, where: Mapping[str, Any]) -> RunSummary:
    return RunSummary(
        run_id=run_id,
        agent_type=where.get("agent_type"),
        user_id=where.get("user_id"),
        state=RunState.PENDING,
        started_at=datetime.fromisoformat(where["enqueued_at"]),
        finished_at=None,
    )


def _outcome_state(outcome: object) -> object:
    return outcome.get("state") if isinstance(outcome, dict) else None


def token_key_from(secret: str) -> bytes:
    """A signing key for page tokens from a configured secret."""
    return hashlib.sha256(json.dumps(["agent-runner page tokens", secret]).encode()).digest()
