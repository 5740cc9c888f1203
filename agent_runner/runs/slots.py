"""The singleton rule, for one slot: the only place a run's workflow is started.

A slot is one fixed workflow id. The Temporal server refuses a second start under that id while
a run is open (``WorkflowIDConflictPolicy.FAIL``) and accepts one as soon as the previous run
closed, however it ended (``WorkflowIDReusePolicy.ALLOW_DUPLICATE``). That check and the start
are one atomic server operation, across every API replica, worker, queue and other client:
there is no lock of ours to take, leak or expire. So a scope with N slots never runs N+1 agents,
whatever any queue or caller does.

The slot's latest run is read first (one strongly consistent ``describe``): if it is open the
answer is busy without a start; if it closed, what it leaves (an attempt of its agent that may
still be working, its fencing tokens) is handed to the new run (:mod:`.handoff`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from temporalio.client import Client, WorkflowExecutionDescription, WorkflowExecutionStatus
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from agent_runner import search_attributes
from agent_runner.locations import Scope, SlotRun
from agent_runner.models import WORKFLOW_TYPE, AgentRunInput
from agent_runner.records import run_memo, run_search_attributes, run_summary
from agent_runner.runs.errors import AgentBusyError
from agent_runner.runs.handoff import handoff_after
from agent_runner.runs.types import RunTarget

# Closes that our own workflow code makes, after its agent stopped: the queue was empty then,
# or the run handed its slot to a queued run. Anything else (a terminate, a timeout) can free a
# slot while runs are queued, for the moment until the queue takes it.
_CLEAN_CLOSES = {
    WorkflowExecutionStatus.COMPLETED,
    WorkflowExecutionStatus.FAILED,
    WorkflowExecutionStatus.CANCELED,
    WorkflowExecutionStatus.CONTINUED_AS_NEW,
}


class SlotBusyError(AgentBusyError):
    """The slot holds an open run: ``running_run_id`` is the id its client knows,
    ``temporal_run_id`` its execution's run id, ``memo`` its memo (empty if unknown)."""

    def __init__(
        self, running_run_id: str | None, temporal_run_id: str | None, memo: Mapping[str, Any]
    ) -> None:
        super().__init__(running_run_id)
        self.temporal_run_id = temporal_run_id
        self.memo = memo


def _busy(
    scope: Scope, slot: int, temporal_run_id: str | None, memo: Mapping[str, Any]
) -> SlotBusyError:
    if isinstance(memo.get("queued_id"), str):
        return SlotBusyError(memo["queued_id"], temporal_run_id, memo)
    if temporal_run_id is None:
        return SlotBusyError(None, None, memo)
    return SlotBusyError(SlotRun(scope, slot, temporal_run_id).run_id, temporal_run_id, memo)


@dataclass(frozen=True)
class Started:
    """A run now holds the slot."""

    temporal_run_id: str
    # The slot's previous run closed in a way that can free a slot while runs are queued.
    after_unclean_close: bool


async def start_on_slot(
    client: Client, target: RunTarget, scope: Scope, slot: int, run_input: AgentRunInput
) -> Started:
    """Start ``run_input`` on slot ``slot`` of ``scope``, or raise :class:`SlotBusyError`."""
    workflow_id = scope.slot_id(slot)
    previous = await latest(client, workflow_id, target)
    memo = await previous.memo() if previous is not None else {}
    if previous is not None and previous.status == WorkflowExecutionStatus.RUNNING:
        raise _busy(scope, slot, previous.run_id, memo)
    run_input = replace(
        run_input,
        handoff=handoff_after(previous, memo),
        location=SlotRun(scope, slot, "").location,
    )
    try:
        handle = await client.start_workflow(
            WORKFLOW_TYPE,
            run_input,
            id=workflow_id,
            task_queue=target.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            memo=run_memo(run_input),
            search_attributes=run_search_attributes(run_input),
            static_summary=run_summary(run_input.agent_type, run_input.user_id),
            rpc_timeout=target.rpc_timeout,
        )
    except WorkflowAlreadyStartedError as err:
        # Another start won the race between our read and our start; its memo may say it was
        # this very request (the same Idempotency-Key).
        winner = await latest(client, workflow_id, target)
        memo = await winner.memo() if winner is not None and winner.run_id == err.run_id else {}
        raise _busy(scope, slot, err.run_id, memo) from None
    assert handle.result_run_id is not None
    unclean = previous is not None and previous.status not in _CLEAN_CLOSES
    return Started(handle.result_run_id, after_unclean_close=unclean)


async def latest(
    client: Client, workflow_id: str, target: RunTarget
) -> WorkflowExecutionDescription | None:
    """The latest run of ``workflow_id``, open or closed; None if it never ran."""
    try:
        return await client.get_workflow_handle(workflow_id).describe(
            rpc_timeout=target.rpc_timeout
        )
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


async def take_a_slot(
    client: Client, target: RunTarget, scope: Scope, run_input: AgentRunInput
) -> str:
    """Start the run on the first free slot (the lowest number first); its run id. Raises
    :class:`AgentBusyError` naming the run on slot 0 when every slot is taken, or when runs wait
    in the scope's queue (a start that will not wait never jumps it)."""
    deadline = time.monotonic() + target.rpc_timeout.total_seconds()
    busy: AgentBusyError | None = None
    for slot in range(target.slots):
        while True:
            try:
                started = await start_on_slot(client, target, scope, slot, run_input)
                break
            except SlotBusyError as err:
                busy = busy or err
                started = None
                break
            except RPCError as err:
                # Many calls on one workflow id at once: the server asks us to back off. That is
                # contention, not an outage; try again until the budget is spent.
                if err.status != RPCStatusCode.RESOURCE_EXHAUSTED:
                    raise
                if time.monotonic() > deadline:
                    raise AgentBusyError(None) from None
                await asyncio.sleep(random.uniform(0.02, 0.1))  # noqa: S311 (jitter)
        if started is None:
            continue
        if started.after_unclean_close and await _runs_are_queued(client, target, scope):
            # A terminated run left this slot free for the moment the queue needs to take it:
            # the queue's head goes first. Undo our start (its agent has not begun: it waits
            # for the terminated run's attempt) and say busy.
            await client.get_workflow_handle(
                scope.slot_id(slot), run_id=started.temporal_run_id
            ).terminate("rejected: runs are waiting in the queue", rpc_timeout=target.rpc_timeout)
            raise AgentBusyError(None)
        return SlotRun(scope, slot, started.temporal_run_id).run_id
    assert busy is not None
    raise busy


async def _runs_are_queued(client: Client, target: RunTarget, scope: Scope) -> bool:
    queue = await latest(client, scope.queue_id, target)
    if queue is None or queue.status is None or queue.status.name != "RUNNING":
        return False
    return (queue.typed_search_attributes.get(search_attributes.QUEUE_DEPTH) or 0) > 0
