"""Starting a run: take a free slot of its scope, or (``on_busy="enqueue"``) wait in the
scope's queue.

The slots enforce the bound (:mod:`.slots`); the queue only orders who gets a slot next
(:mod:`workflows.queue`, reached here by name). While runs wait in a scope's queue, no slot of
that scope stands free: a run that ends hands its slot straight to the queue's head. So a start
that will not wait is refused while anything waits, even in the instant between two runs.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import partial
from typing import Any

from temporalio.client import (
    Client,
)

from agent_runner.locations import Scope
from agent_runner.models import AgentRunInput, RunPolicy
from agent_runner.queue_types import (
    EnqueueRequest,
    EnqueueResult,
)
from agent_runner.runs.enqueue import enqueue_runs
from agent_runner.runs.errors import (
    AgentBusyError,
    IdempotencyKeyReusedError,
    QueueFullError,
    temporal_call,
)
from agent_runner.runs.idempotency import earlier_run
from agent_runner.runs.slots import SlotBusyError, take_a_slot
from agent_runner.runs.types import RunTarget
from agent_runner.validation import parse_run_input


class OnBusy(StrEnum):
    REJECT = "reject"
    ENQUEUE = "enqueue"


@dataclass(frozen=True)
class StartRequest:
    """A validated request to start a run."""

    run_input: AgentRunInput
    idempotency_key: str | None = None
    on_busy: OnBusy = OnBusy.REJECT

    @property
    def fingerprint(self) -> str:
        return self.run_input.request_fingerprint or ""


@dataclass(frozen=True)
class StartOutcome:
    run_id: str
    # None: the run started at once; else its place in the queue (1 is next).
    queue_position: int | None = None
    # The same request was made before with the same Idempotency-Key: this is that run.
    replayed: bool = False


def start_request(
    agent_type: str,
    user_id: str | uuid.UUID,
    *,
    policy: RunPolicy | None = None,
    params: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
    on_busy: OnBusy = OnBusy.REJECT,
) -> StartRequest:
    """Validate a request's shape (whether the agent exists and its ``params`` fit are for
    the caller to check against its registry). Raises :class:`UnsupportedAgentTypeError` /
    :class:`InvalidRunInputError` (both ``ValueError``)."""
    run_input = parse_run_input(
        {
            "agent_type": agent_type,
            "user_id": str(user_id),
            "policy": policy or RunPolicy(),
            "params": dict(params) if params is not None else None,
        }
    )
    canonical_params = json.dumps(run_input.params, sort_keys=True, separators=(",", ":"))
    fingerprint = hashlib.sha256(
        f"{run_input.agent_type}\n{run_input.user_id}\n{canonical_params}".encode()
    ).hexdigest()
    run_input = replace(
        run_input,
        idempotency_key=idempotency_key,
        request_fingerprint=fingerprint if idempotency_key else None,
    )
    return StartRequest(run_input, idempotency_key, on_busy)


async def start_agent_run(
    client: Client,
    agent_type: str,
    user_id: str | uuid.UUID,
    *,
    target: RunTarget,
    policy: RunPolicy | None = None,
    params: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
    on_busy: OnBusy = OnBusy.REJECT,
) -> str:
    """Start a run and return its run id: :func:`start_request`, then :func:`start_run`.

    Raises ``ValueError`` for bad input, :class:`AgentBusyError` when every slot is taken (or
    runs are queued) and ``on_busy`` is reject, :class:`QueueFullError`,
    :class:`IdempotencyKeyReusedError`, and :class:`TemporalUnavailableError`.
    """
    request = start_request(
        agent_type,
        user_id,
        policy=policy,
        params=params,
        idempotency_key=idempotency_key,
        on_busy=on_busy,
    )
    return await start_run(client, request, target=target)


async def start_run(client: Client, request: StartRequest, *, target: RunTarget) -> str:
    """:func:`start_run_detailed`, its run id only."""
    return (await start_run_detailed(client, request, target=target)).run_id


TakeSlot = Callable[[Scope, AgentRunInput], Awaitable[str]]
Enqueue = Callable[[Scope, EnqueueRequest], Awaitable[EnqueueResult]]


async def start_run_detailed(
    client: Client,
    request: StartRequest,
    *,
    target: RunTarget,
    take_slot: TakeSlot | None = None,
    enqueue: Enqueue | None = None,
) -> StartOutcome:
    """Start a validated run on a free slot; if none is free, refuse or enqueue it.

    With an ``idempotency_key``, a repeat of the same request returns the run the key first
    started, open, queued or finished (while the namespace retains it); the same key with
    another request raises :class:`IdempotencyKeyReusedError`.

    ``take_slot`` and ``enqueue`` replace the two steps (:func:`take_a_slot`, one call of
    :func:`enqueue_runs`): the API shares one slot attempt among concurrent starts of a scope
    and sends concurrent enqueues as one call.
    """
    take_slot = take_slot or partial(take_a_slot, client, target)
    enqueue = enqueue or partial(_enqueue_one, client, target)
    scope = target.scope(agent_type=request.run_input.agent_type, user_id=request.run_input.user_id)
    with temporal_call():
        if request.idempotency_key is not None:
            earlier = await earlier_run(client, target, request.idempotency_key)
            if earlier is not None:
                if earlier.fingerprint != request.fingerprint:
                    raise _key_reused(request.idempotency_key)
                return StartOutcome(earlier.run_id, replayed=True)
        # A keyed enqueue goes straight to the queue, which keeps each key's answer: a retry of
        # a start whose answer was lost (a 503) finds its run there, even before visibility
        # shows it. A free slot is taken by the queue at once (queue_position null).
        if request.on_busy == OnBusy.REJECT or request.idempotency_key is None:
            try:
                return StartOutcome(await take_slot(scope, request.run_input))
            except AgentBusyError as busy:
                same = _same_request_running(busy, request)
                if same is not None:
                    return same
                if request.on_busy == OnBusy.REJECT:
                    raise
        return _enqueued(await enqueue(scope, _enqueue_request(request)), request)


async def _enqueue_one(
    client: Client, target: RunTarget, scope: Scope, request: EnqueueRequest
) -> EnqueueResult:
    [result] = await enqueue_runs(client, target, scope, [request])
    return result


def _enqueue_request(request: StartRequest) -> EnqueueRequest:
    run_input = request.run_input
    key = request.idempotency_key
    return EnqueueRequest(
        # A repeat with the same Idempotency-Key gets the same answer from the queue.
        request_id=f"key:{key}" if key else f"request:{uuid.uuid4()}",
        agent_type=run_input.agent_type,
        user_id=run_input.user_id,
        policy=run_input.policy,
        params=run_input.params,
        idempotency_key=key,
        request_fingerprint=run_input.request_fingerprint,
    )


def _enqueued(result: EnqueueResult, request: StartRequest) -> StartOutcome:
    if result.refused == "full":
        raise QueueFullError()
    if result.refused == "key reused" and request.idempotency_key:
        raise _key_reused(request.idempotency_key)
    if result.refused or result.run_id is None:
        raise ValueError(f"the queue refused the run: {result.refused}")
    return StartOutcome(result.run_id, result.queue_position)


def _same_request_running(busy: AgentBusyError, request: StartRequest) -> StartOutcome | None:
    """A concurrent request with the same key may have started the run holding the slot."""
    key = request.idempotency_key
    if not isinstance(busy, SlotBusyError) or key is None or busy.running_run_id is None:
        return None
    if busy.memo.get("idempotency_key") != key:
        return None
    if busy.memo.get("request_fingerprint") != request.fingerprint:
        raise _key_reused(key)
    return StartOutcome(busy.running_run_id, replayed=True)


def _key_reused(key: str) -> IdempotencyKeyReusedError:
    return IdempotencyKeyReusedError(
        f"Idempotency-Key {key!r} was already used with a different request"
    )
