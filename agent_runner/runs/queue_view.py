"""What holds the slots and what waits, scope by scope."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from temporalio.client import Client, WorkflowExecutionStatus

from agent_runner.locations import QueuedRun, Scope, ScopeKind, parse_run_id, parse_workflow_id
from agent_runner.queue_types import QUEUE_WORKFLOW_TYPE
from agent_runner.runs.errors import temporal_call
from agent_runner.runs.slot_status import parse_time, status_of
from agent_runner.runs.slots import latest
from agent_runner.runs.types import WAITING_QUEUE, RunState, RunStatus, RunTarget


@dataclass
class QueueView:
    running: list[RunStatus] = field(default_factory=list)
    queued: list[RunStatus] = field(default_factory=list)


async def get_queue(
    client: Client, *, target: RunTarget, scope_key: str | None = None
) -> QueueView:
    """The runs holding a slot (oldest first) and the runs waiting (next first), of one scope
    (``scope_key``: a user id or an agent type, by ``AGENT_SCOPE``) or of every scope."""
    with temporal_call():
        scopes = await _scopes(client, target, scope_key)
        view = QueueView()
        for scope in scopes:
            view.running += await _running(client, target, scope)
            view.queued += await _queued(client, target, scope)
    view.running.sort(key=lambda run: run.started_at or run.queued_at or _EPOCH)
    return view


async def _scopes(client: Client, target: RunTarget, scope_key: str | None) -> list[Scope]:
    if target.scope_kind == ScopeKind.GLOBAL:
        return [Scope(target.workflow_id)]
    if scope_key is not None:
        if target.scope_kind == ScopeKind.USER_ID:
            scope_key = str(uuid.UUID(scope_key))
        return [Scope(target.workflow_id, target.scope_kind, scope_key)]
    # Every scope that has a run open or waiting, from visibility.
    query = f"ExecutionStatus = 'Running' AND WorkflowId STARTS_WITH '{target.workflow_id}'"
    found: dict[str, Scope] = {}
    async for execution in client.list_workflows(query, rpc_timeout=target.rpc_timeout):
        where = parse_workflow_id(target.workflow_id, execution.id)
        if where is not None and where[0].kind == target.scope_kind:
            found[where[0].id] = where[0]
    return sorted(found.values(), key=lambda scope: scope.id)


async def _running(client: Client, target: RunTarget, scope: Scope) -> list[RunStatus]:
    running = []
    for slot in range(target.slots):
        description = await latest(client, scope.slot_id(slot), target)
        if description is not None and description.status == WorkflowExecutionStatus.RUNNING:
            running.append(await status_of(client, target, description))
    return running


async def _queued(client: Client, target: RunTarget, scope: Scope) -> list[RunStatus]:
    queue = await latest(client, scope.queue_id, target)
    if queue is None or queue.status != WorkflowExecutionStatus.RUNNING:
        return []
    if queue.workflow_type != QUEUE_WORKFLOW_TYPE:
        return []
    waiting: list[tuple[QueuedRun, dict[str, object]]] = []
    for key, where in (await queue.memo()).items():
        ref = parse_run_id(target.workflow_id, key[2:]) if key.startswith("r:") else None
        queued = isinstance(where, dict) and where.get("state") == "queued"
        if isinstance(ref, QueuedRun) and queued:
            waiting.append((ref, where))
    waiting.sort(key=lambda pair: pair[0].number)
    return [
        RunStatus(
            run_id=ref.run_id,
            agent_type=_text(where.get("agent_type")),
            user_id=_text(where.get("user_id")),
            state=RunState.PENDING,
            result=None,
            error=None,
            attempt=0,
            started_at=None,
            finished_at=None,
            queue_position=position,
            queued_at=parse_time(where.get("enqueued_at")),
            workflow_id=queue.id,
            temporal_run_id=queue.run_id,
            waiting_for=WAITING_QUEUE,
        )
        for position, (ref, where) in enumerate(waiting, 1)
    ]


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


_EPOCH = datetime.min.replace(tzinfo=UTC)
