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
from dataclasses import dataclass, replace
from datetime import datetime

from temporalio.client import WorkflowExecution, WorkflowExecutionStatus

from agent_runner import search_attributes
from agent_runner.contract import RUN_WORKFLOW, SCOPE_WORKFLOW, RunRecord, RunState
from agent_runner.executions import describe_view
from agent_runner.ids import Scope, parse_workflow_id
from agent_runner.runs.errors import (
    BAD_PAGE_TOKEN_DETAIL,
    InvalidPageTokenError,
    fetch_page,
    temporal_call,
)
from agent_runner.runs.service import Runs
from agent_runner.status import RunStatus, run_status

_PROCESS_KEY = secrets.token_bytes(32)
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
    token = _verified(page_token, token_key)
    executions = runs.client.list_workflows(
        _query(runs, agent_type, user_id, state),
        page_size=limit,
        next_page_token=token,
        rpc_timeout=runs.target.rpc_timeout,
    )
    page: list[RunSummary] = []
    with temporal_call():
        if page_token is None and state in (None, RunState.PENDING):
            page += await _queued(runs, agent_type, user_id)
        await fetch_page(executions, token)
        found = await asyncio.gather(
            *(_summary(runs, execution) for execution in executions.current_page or [])
        )
    page += [summary for summary in found if summary is not None]
    if state is not None:
        page = [run for run in page if run.state == state]
    following = executions.next_page_token
    return RunPage(page, _signed(following, token_key) if following else None)


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
    scopes = []
    async for coordinator in runs.client.list_workflows(
        query, limit=_QUEUES_SHOWN, rpc_timeout=runs.target.rpc_timeout
    ):
        place = parse_workflow_id(runs.target.workflow_id, coordinator.id)
        if place is not None and place.slot is None:
            scopes.append(place.scope)
    # Asked at once: the call's budget is one round trip, not one per scope.
    views = await asyncio.gather(*(runs.view(scope, 0, 100) for scope in scopes))
    waiting: list[RunSummary] = []
    for view in views:
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


# --- the queues, page by page -------------------------------------------------------------------


@dataclass(frozen=True)
class QueuePage:
    """Runs holding a slot and runs waiting, scope after scope (holders first, then the queue in
    order), at most a page's limit of them, and where the next page starts."""

    running: list[RunStatus]
    queued: list[RunStatus]
    next_page_token: str | None


@dataclass(frozen=True)
class _QueueCursor:
    """Where a queue page starts: the visibility page of scopes it is in (None: the first, or
    the one scope named), the scope's place in that page, and how many of that scope's holders
    and waiting runs earlier pages showed."""

    scopes: bytes | None = None
    index: int = 0
    held: int = 0
    waiting: int = 0
    named: str = ""


@dataclass(frozen=True)
class _Entries:
    held: list[str]
    waiting: list[RunRecord]
    more: bool  # runs wait beyond these


async def list_queue(
    runs: Runs,
    *,
    scope: Scope | None,
    token_key: bytes | None = None,
    limit: int = 50,
    page_token: str | None = None,
) -> QueuePage:
    """One page of the queues of ``scope`` (None: every scope with runs open, in visibility's
    order). A page costs one visibility call and one view of each of at most ``limit`` scopes,
    asked at once, whatever the number of scopes. Runs move while one pages: as the queue moves
    under the reader, a run may show on two pages, or on none."""
    token_key = token_key or _PROCESS_KEY
    named = scope.id if scope is not None else ""
    cursor = _queue_cursor(_verified(page_token, token_key), named)
    holders: list[str] = []
    queued: list[RunStatus] = []
    room = limit
    next_cursor: _QueueCursor | None = None
    while next_cursor is None:
        if scope is not None:
            page, next_scopes = [scope], None
        else:
            page, next_scopes = await runs.scope_page(cursor.scopes, limit)
        first = cursor.index
        with temporal_call():
            found = await asyncio.gather(
                *(
                    _entries(runs, each, cursor if at == first else _QueueCursor(), room)
                    for at, each in enumerate(page[first:], start=first)
                )
            )
        for at, entries in enumerate(found, start=first):
            held = entries.held[:room]
            waiting = entries.waiting[: room - len(held)]
            holders += held
            queued += [status for record in waiting if (status := run_status_of(record))]
            room -= len(held) + len(waiting)
            if room > 0:
                continue
            begun = cursor if at == first else _QueueCursor(cursor.scopes, at, named=named)
            if len(held) < len(entries.held) or len(waiting) < len(entries.waiting) or entries.more:
                next_cursor = replace(
                    begun,
                    index=at,
                    held=begun.held + len(held),
                    waiting=begun.waiting + len(waiting),
                )
            elif at + 1 < len(page):
                next_cursor = _QueueCursor(cursor.scopes, at + 1, named=named)
            elif next_scopes:
                next_cursor = _QueueCursor(next_scopes, named=named)
            break
        if room > 0 and next_scopes:
            cursor = _QueueCursor(next_scopes, named=named)
        else:
            break
    with temporal_call():
        running = list(await asyncio.gather(*(runs.status(run_id) for run_id in holders)))
    token = _signed(_queue_token(next_cursor), token_key) if next_cursor else None
    return QueuePage(running, queued, token)


def run_status_of(record: RunRecord) -> RunStatus | None:
    """A waiting run's status, from its coordinator's record alone."""
    return run_status(record.run_id, record, None)


async def _entries(runs: Runs, scope: Scope, cursor: _QueueCursor, room: int) -> _Entries:
    """The scope's holders and waiting runs past what ``cursor`` says was shown (at most
    ``room`` of each), in one view."""
    view = await runs.view(scope, cursor.waiting, room)
    if view is None:
        return _Entries([], [], more=False)
    held = [slot.run_id for slot in view.slots if slot.run_id][cursor.held :]
    more = cursor.waiting + len(view.queued) < view.queue_length
    return _Entries(held, view.queued, more)


def _queue_token(cursor: _QueueCursor) -> bytes:
    scopes = base64.b64encode(cursor.scopes).decode() if cursor.scopes else ""
    fields = {"s": scopes, "i": cursor.index, "h": cursor.held, "w": cursor.waiting}
    return json.dumps({**fields, "n": cursor.named}, separators=(",", ":")).encode()


def _queue_cursor(token: bytes | None, named: str) -> _QueueCursor:
    """The cursor a token carries; only a token of a listing of the same scope (or of all)."""
    if token is None:
        return _QueueCursor(named=named)
    try:
        fields = json.loads(token)
        scopes = fields["s"]
        counts = [fields["i"], fields["h"], fields["w"]]
        if not isinstance(scopes, str) or fields["n"] != named:
            raise TypeError(scopes)
        if not all(isinstance(count, int) and count >= 0 for count in counts):
            raise TypeError(counts)
        index, held, waiting = counts
        decoded = base64.b64decode(scopes, validate=True) if scopes else None
        return _QueueCursor(decoded, index, held, waiting, named)
    except (ValueError, TypeError, KeyError, binascii.Error):
        raise InvalidPageTokenError(BAD_PAGE_TOKEN_DETAIL) from None
