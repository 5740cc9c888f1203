"""Starting a run: the singleton rule lives here and nowhere else.

Every run is one execution of the agent workflow (started by its type name) under one fixed
workflow id. The Temporal server refuses a second start under that id while a run is open
(``WorkflowIDConflictPolicy.FAIL``) and accepts one as soon as the previous run closed, however
it ended (``WorkflowIDReusePolicy.ALLOW_DUPLICATE``). That check and the start are one atomic
server operation, across every API replica, worker and other client: there is no lock of ours
to take, leak or expire.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from temporalio.client import Client, WorkflowExecution
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError

from agent_runner import search_attributes
from agent_runner.models import WORKFLOW_TYPE, AgentRunInput, RunPolicy
from agent_runner.runs.errors import AgentBusyError, IdempotencyKeyReusedError, temporal_call
from agent_runner.runs.read import run_handle
from agent_runner.runs.types import RunTarget
from agent_runner.validation import parse_run_input


def run_summary(agent_type: str, user_id: str) -> str:
    return f"{agent_type} for {user_id}"


async def start_agent_run(
    client: Client,
    agent_type: str,
    user_id: str | uuid.UUID,
    *,
    target: RunTarget,
    policy: RunPolicy | None = None,
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
        {"agent_type": agent_type, "user_id": str(user_id), "policy": policy or RunPolicy()}
    )
    fingerprint = _fingerprint(run_input)
    memo: dict[str, Any] = {"agent_type": run_input.agent_type, "user_id": run_input.user_id}
    attributes = [
        SearchAttributePair(search_attributes.AGENT_TYPE, run_input.agent_type),
        SearchAttributePair(search_attributes.USER_ID, run_input.user_id),
    ]
    with temporal_call():
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
                WORKFLOW_TYPE,
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
                holder = await run_handle(client, target, err.run_id).describe(
                    rpc_timeout=target.rpc_timeout
                )
                if (await holder.memo()).get("idempotency_key") == idempotency_key:
                    return await _same_request(holder, idempotency_key, fingerprint)
            raise AgentBusyError(err.run_id) from None
    assert handle.result_run_id is not None
    return handle.result_run_id


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
