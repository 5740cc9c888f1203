"""Starting a run: the singleton rule lives here and nowhere else.

Every run is one execution of the agent workflow (started by its type name) under one fixed
workflow id. The Temporal server refuses a second start under that id while a run is open
(``WorkflowIDConflictPolicy.FAIL``) and accepts one as soon as the previous run closed, however
it ended (``WorkflowIDReusePolicy.ALLOW_DUPLICATE``). That check and the start are one atomic
server operation, across every API replica, worker and other client: there is no lock of ours
to take, leak or expire.

A closed run can leave an attempt of its agent working (``temporal workflow terminate`` closes
it at once); the new run's agent then waits for that attempt's lease (:mod:`.handoff`).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from agent_runner import search_attributes
from agent_runner.models import WORKFLOW_TYPE, AgentRunInput, RunPolicy
from agent_runner.runs.errors import AgentBusyError, IdempotencyKeyReusedError, temporal_call
from agent_runner.runs.handoff import handoff_after
from agent_runner.runs.read import run_handle
from agent_runner.runs.types import RunTarget
from agent_runner.validation import parse_run_input


def run_summary(agent_type: str, user_id: str) -> str:
    return f"{agent_type} for {user_id}"


@dataclass(frozen=True)
class StartRequest:
    """A validated request to start a run."""

    run_input: AgentRunInput
    fingerprint: str
    idempotency_key: str | None = None


def start_request(
    agent_type: str,
    user_id: str | uuid.UUID,
    *,
    policy: RunPolicy | None = None,
    idempotency_key: str | None = None,
) -> StartRequest:
    """Validate a request. Raises :class:`UnsupportedAgentTypeError` /
    :class:`InvalidRunInputError` (both ``ValueError``)."""
    run_input = parse_run_input(
        {"agent_type": agent_type, "user_id": str(user_id), "policy": policy or RunPolicy()}
    )
    return StartRequest(run_input, _fingerprint(run_input), idempotency_key)


async def start_agent_run(
    client: Client,
    agent_type: str,
    user_id: str | uuid.UUID,
    *,
    target: RunTarget,
    policy: RunPolicy | None = None,
    idempotency_key: str | None = None,
) -> str:
    """Start a run and return its run id: :func:`start_request`, then :func:`start_run`.

    With an ``idempotency_key``, a repeat of the same request returns the run the key first
    started, open or finished (while the namespace retains it), instead of a new run or a busy
    error; the same key with another request raises :class:`IdempotencyKeyReusedError`.

    Raises ``ValueError`` for bad input, :class:`AgentBusyError` while another run is open, and
    :class:`TemporalUnavailableError` when the server cannot be reached.
    """
    request = start_request(agent_type, user_id, policy=policy, idempotency_key=idempotency_key)
    return await start_run(client, request, target=target)


async def start_run(client: Client, request: StartRequest, *, target: RunTarget) -> str:
    """Start a validated run; returns its run id.

    The slot's latest run is read first: if it is open, the answer is busy without trying to
    start; if it closed, what it leaves (an attempt that may still be working, its fencing
    tokens) is handed to the new run. The start itself is the atomic check.
    """
    deadline = time.monotonic() + target.rpc_timeout.total_seconds()
    with temporal_call():
        if request.idempotency_key is not None:
            earlier = await _run_with_idempotency_key(client, target, request.idempotency_key)
            if earlier is not None:
                return await _same_request(earlier, request.idempotency_key, request.fingerprint)
        while True:
            try:
                return await _start_after_latest(client, target, request)
            except RPCError as err:
                # Many calls on one workflow id at once: the server asks us to back off. That is
                # contention, not an outage; try again until the budget is spent.
                if err.status != RPCStatusCode.RESOURCE_EXHAUSTED:
                    raise
                if time.monotonic() > deadline:
                    raise AgentBusyError(None) from None
                await asyncio.sleep(random.uniform(0.02, 0.1))  # noqa: S311 (jitter)


async def _start_after_latest(client: Client, target: RunTarget, request: StartRequest) -> str:
    previous = await _latest(client, target)
    memo = await previous.memo() if previous is not None else {}
    if previous is not None and previous.status == WorkflowExecutionStatus.RUNNING:
        if request.idempotency_key is not None and (
            memo.get("idempotency_key") == request.idempotency_key
        ):
            # A concurrent request with the same key started the open run.
            return await _same_request(previous, request.idempotency_key, request.fingerprint)
        raise AgentBusyError(previous.run_id)
    run_input = replace(request.run_input, handoff=handoff_after(previous, memo))
    try:
        handle = await client.start_workflow(
            WORKFLOW_TYPE,
            run_input,
            id=target.workflow_id,
            task_queue=target.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            memo=_memo(run_input, request),
            search_attributes=_search_attributes(run_input, request.idempotency_key),
            static_summary=run_summary(run_input.agent_type, run_input.user_id),
            rpc_timeout=target.rpc_timeout,
        )
    except WorkflowAlreadyStartedError as err:
        # Another start won the race between our read and our start: maybe one with our key.
        if request.idempotency_key is not None and err.run_id:
            holder = await run_handle(client, target, err.run_id).describe(
                rpc_timeout=target.rpc_timeout
            )
            if (await holder.memo()).get("idempotency_key") == request.idempotency_key:
                return await _same_request(holder, request.idempotency_key, request.fingerprint)
        raise AgentBusyError(err.run_id) from None
    assert handle.result_run_id is not None
    return handle.result_run_id


async def _latest(client: Client, target: RunTarget) -> WorkflowExecutionDescription | None:
    try:
        return await run_handle(client, target, None).describe(rpc_timeout=target.rpc_timeout)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


def _memo(run_input: AgentRunInput, request: StartRequest) -> dict[str, Any]:
    """What reads of the run need without decoding its input, and what the next run on the
    slot inherits (the bound it had to wait for)."""
    handoff = run_input.handoff
    memo: dict[str, Any] = {
        "agent_type": run_input.agent_type,
        "user_id": run_input.user_id,
        "not_before": handoff.not_before.isoformat() if handoff and handoff.not_before else "",
    }
    if request.idempotency_key is not None:
        memo |= {
            "idempotency_key": request.idempotency_key,
            "request_fingerprint": request.fingerprint,
        }
    return memo


def _search_attributes(
    run_input: AgentRunInput, idempotency_key: str | None
) -> TypedSearchAttributes:
    attributes = [
        SearchAttributePair(search_attributes.AGENT_TYPE, run_input.agent_type),
        SearchAttributePair(search_attributes.USER_ID, run_input.user_id),
    ]
    if idempotency_key is not None:
        attributes.append(SearchAttributePair(search_attributes.IDEMPOTENCY_KEY, idempotency_key))
    return TypedSearchAttributes(attributes)


def _fingerprint(run_input: AgentRunInput) -> str:
    return hashlib.sha256(f"{run_input.agent_type}\n{run_input.user_id}".encode()).hexdigest()


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
