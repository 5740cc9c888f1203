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
from datetime import UTC, datetime

from temporalio.client import WorkflowExecution, WorkflowExecutionStatus, WorkflowQueryFailedError

from agent_runner import search_attributes
from agent_runner.contract import RUN_WORKFLOW, SCOPE_WORKFLOW, RunRecord, RunState
from agent_runner.executions import describe_view
from agent_runner.ids import Scope, parse_workflow_id
from agent_runner.runs.errors import (
    BAD_PAGE_TOKEN_DETAIL,
    InvalidPageTokenError,
    RunNotFoundError,
    TemporalUnavailableError,
    fetch_page,
    temporal_call,
)
from agent_runner.runs.service import OpenScope, Runs
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
    query = _query(runs, agent_type, user_id, state)
    purpose = f"runs {query}"
    token = _verified(page_token, token_key, purpose)
    executions = runs.client.list_workflows(
        query,
        page_size=limit,
        next_page_token=token,
        rpc_timeout=runs.target.rpc_timeout,
    )
    page: list[RunSummary] = []
    with temporal_call():
        if token is None and state in (None, RunState.PENDING):
            page += await _queued(runs, agent_type, user_id)
        await fetch_page(executions, token)
        found = await asyncio.gather(
            *(_summary(runs, execution) for execution in executions.current_page or [])
        )
    page += [summary for summary in found if summary is not None]
    if state is not None:
        page = [run for run in page if run.state == state]
    following = executions.next_page_token
    return RunPage(page, _signed(following, token_key, purpose) if following else None)


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


def _signed(token: bytes, key: bytes, purpose: str) -> str:
    """``token`` as a page token for the listing ``purpose`` names: one for another listing,
    or for the same one with other filters, is refused."""
    body = base64.urlsafe_b64encode(token).decode()
    return f"{body}.{_mac(body, key, purpose)}"


def _verified(page_token: str | None, key: bytes, purpose: str) -> bytes | None:
    if not page_token:
        return None
    body, _, mac = page_token.rpartition(".")
    if not page_token.isascii() or not body:
        raise InvalidPageTokenError(BAD_PAGE_TOKEN_DETAIL)
    if not hmac.compare_digest(mac, _mac(body, key, purpose)):
        raise InvalidPageTokenError(BAD_PAGE_TOKEN_DETAIL)
    try:
        return base64.b64decode(body.encode(), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise InvalidPageTokenError(BAD_PAGE_TOKEN_DETAIL) from None


def _mac(body: str, key: bytes, purpose: str) -> str:
    signed = json.dumps([purpose, body]).encode()
    digest = hmac.new(key, signed, hashlib.sha256).digest()
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
    """Where a queue page starts: the visibility page it resumes in (None: the first, or the
    one scope named), and the scope it resumes at, by id (or, once that scope has closed, the
    first one visibility lists after it, by start time), with how many of that scope's holders
    and waiting runs earlier pages showed."""

    visibility: bytes | None = None
    scope_id: str = ""
    started: float = 0.0
    held: int = 0
    waiting: int = 0

    @staticmethod
    def of(
        scope: OpenScope, visibility: bytes | None, held: int = 0, waiting: int = 0
    ) -> _QueueCursor:
        """The cursor at ``scope``, on the visibility page ``visibility``."""
        started = scope.started_at.timestamp()
        return _QueueCursor(visibility, scope.scope.id, started, held, waiting)


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
    order). A page costs one visibility call (rarely two: when the scope it resumes at has
    closed, or to look past the end of a visibility page), one view for each scope it shows
    (the scopes' published counts say how many to ask, all at once) and one status read per
    holder, whatever the number of scopes. A page may hold fewer runs than ``limit``, even
    none; only a null token says the end."""
    limit = max(1, limit)
    token_key = token_key or _PROCESS_KEY
    purpose = f"queue {scope.id if scope is not None else ''}"
    cursor = _queue_cursor(_verified(page_token, token_key, purpose))
    if scope is not None:
        # One scope, its counts unknown: viewed whatever they are.
        epoch = datetime.fromtimestamp(0, UTC)
        page, following = [OpenScope(scope, epoch, busy=1, waiting=limit)], None
    else:
        # One scope more than a page shows: a cursor at the page's end stays on this page.
        page, following = await runs.scope_page(cursor.visibility, limit + 1)
    first = _resume_at(page, cursor)
    if first == len(page) and following is not None and cursor.scope_id:
        cursor = _QueueCursor(following)
        page, following = await runs.scope_page(following, limit + 1)
        first = 0
    here = cursor.visibility
    # What earlier pages showed of the first scope: the cursor's counts if it is the cursor's
    # scope, nothing if that one has closed and this is the one after it.
    resumed = first < len(page) and page[first].scope.id == cursor.scope_id
    begun = cursor if resumed else _QueueCursor()
    shown = _to_view(page, first, begun, limit)
    with temporal_call():
        found = await asyncio.gather(
            *(
                _entries(runs, page[at].scope, begun if at == first else _QueueCursor(), limit)
                for at in shown
            )
        )
    holders: list[str] = []
    queued: list[RunStatus] = []
    room = limit
    next_cursor: _QueueCursor | None = None
    for at, entries in zip(shown, found, strict=True):
        before = begun if at == first else _QueueCursor()
        held = entries.held[:room]
        waiting = entries.waiting[: room - len(held)]
        holders += held
        queued += [status for record in waiting if (status := run_status_of(record))]
        room -= len(held) + len(waiting)
        if room == 0:
            if len(held) < len(entries.held) or len(waiting) < len(entries.waiting) or entries.more:
                next_cursor = _QueueCursor.of(
                    page[at], here, before.held + len(held), before.waiting + len(waiting)
                )
            else:
                next_cursor = await _after(runs, page, at, here, following)
            break
    else:
        last = shown[-1] if shown else first - 1
        next_cursor = await _after(runs, page, last, here, following)
    with temporal_call():
        statuses = await asyncio.gather(*(_status_of(runs, run_id) for run_id in holders))
    running = [status for status in statuses if status is not None]
    token = _signed(_queue_token(next_cursor), token_key, purpose) if next_cursor else None
    return QueuePage(running, queued, token)


def _resume_at(page: list[OpenScope], cursor: _QueueCursor) -> int:
    """Where in ``page`` the cursor's scope is; if it has closed, the first scope visibility
    lists after it (newest first: the first one that started before it)."""
    if not cursor.scope_id:
        return 0
    for index, open_scope in enumerate(page):
        if open_scope.scope.id == cursor.scope_id:
            return index
    for index, open_scope in enumerate(page):
        if open_scope.started_at.timestamp() < cursor.started:
            return index
    return len(page)


def _to_view(page: list[OpenScope], first: int, begun: _QueueCursor, limit: int) -> list[int]:
    """The scopes of ``page`` from ``first`` (of which ``begun`` says what was shown) whose
    runs, as they last published their counts, fill a page: each counted as at least one."""
    chosen: list[int] = []
    room = limit
    for at in range(first, len(page)):
        chosen.append(at)
        count = page[at].busy + page[at].waiting
        if at == first:
            count -= begun.held + begun.waiting
        room -= max(1, count)
        if room <= 0:
            break
    return chosen


async def _after(
    runs: Runs, page: list[OpenScope], at: int, here: bytes | None, following: bytes | None
) -> _QueueCursor | None:
    """The cursor of the scope after ``page[at]``: on this page, or the next page's first;
    None when there is none (visibility hands out a token after any full page, so a page's
    end is looked past, one scope, rather than answered with an empty page)."""
    if at + 1 < len(page):
        return _QueueCursor.of(page[at + 1], here)
    if following is None:
        return None
    beyond, _ = await runs.scope_page(following, 1)
    return _QueueCursor(following) if beyond else None


def run_status_of(record: RunRecord) -> RunStatus | None:
    """A waiting run's status, from its coordinator's record alone."""
    return run_status(record.run_id, record, None)


async def _status_of(runs: Runs, run_id: str) -> RunStatus | None:
    """A holder's status; None if it is gone by now (it ended, and is no longer kept)."""
    try:
        return await runs.status(run_id)
    except RunNotFoundError:
        return None


async def _entries(runs: Runs, scope: Scope, begun: _QueueCursor, room: int) -> _Entries:
    """The scope's holders and waiting runs past what ``begun`` says was shown of it (at most
    ``room`` waiting), in one view."""
    try:
        view = await runs.view(scope, begun.waiting, room)
    except WorkflowQueryFailedError:
        raise TemporalUnavailableError("a scope's coordinator did not answer") from None
    if view is None:
        return _Entries([], [], more=False)
    held = [slot.run_id for slot in view.slots if slot.run_id][begun.held :]
    more = begun.waiting + len(view.queued) < view.queue_length
    return _Entries(held, view.queued, more)


def _queue_token(cursor: _QueueCursor) -> bytes:
    visibility = base64.b64encode(cursor.visibility).decode() if cursor.visibility else ""
    fields = {"v": visibility, "s": cursor.scope_id, "t": cursor.started}
    return json.dumps({**fields, "h": cursor.held, "w": cursor.waiting}).encode()


def _queue_cursor(token: bytes | None) -> _QueueCursor:
    if token is None:
        return _QueueCursor()
    try:
        fields = json.loads(token)
        visibility, scope_id, started = fields["v"], fields["s"], fields["t"]
        counts = [fields["h"], fields["w"]]
        if not isinstance(visibility, str) or not isinstance(scope_id, str):
            raise TypeError(visibility)
        if not isinstance(started, int | float) or isinstance(started, bool):
            raise TypeError(started)
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts):
            raise TypeError(counts)
        decoded = base64.b64decode(visibility, validate=True) if visibility else None
        return _QueueCursor(decoded, scope_id, float(started), *counts)
    except (ValueError, TypeError, KeyError, binascii.Error):
        raise InvalidPageTokenError(BAD_PAGE_TOKEN_DETAIL) from None
