"""What the queue workflow asks of the outside world: its configuration, taking or reserving a
slot, and watching a slot's run until it closes. Calls to Temporal, nothing else."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity
from temporalio.client import WorkflowExecutionStatus, WorkflowHistoryEventFilterType
from temporalio.service import RPCError, RPCStatusCode

from agent_runner.locations import Scope
from agent_runner.queue_types import (
    CLAIM_UPDATE,
    OFFER_SIGNAL,
    Claim,
    ClaimResult,
    QueueConfig,
    QueueEntry,
)
from agent_runner.runs.slots import SlotBusyError, latest, start_on_slot
from agent_runner.runs.types import RunTarget

# One long poll of a slot's close event; the activity heartbeats between polls.
_WATCH_POLL = timedelta(seconds=10)


@dataclass(frozen=True)
class SlotVisit:
    """Give slot ``slot`` of ``scope`` to ``entry`` if it is free, or else leave its run an
    offer: "runs are waiting; claim one from ``queue_id`` when you end"."""

    scope: Scope
    slot: int
    entry: QueueEntry | None = None


@dataclass(frozen=True)
class SlotState:
    """``placed``: the entry now runs there as ``run_id``. Otherwise ``run_id`` is the open run
    that holds the slot (and now an offer), or None: the slot is free."""

    placed: bool = False
    run_id: str | None = None


@dataclass(frozen=True)
class ClaimNext:
    """An ending run of slot ``slot`` asks ``queue_id`` for the next run."""

    queue_id: str
    slot: int
    claimant_run_id: str


@dataclass(frozen=True)
class WatchSlot:
    slot_id: str
    run_id: str


@dataclass(frozen=True)
class SlotClosed:
    """How a slot's run closed: ``status`` is the close event's name; a run that handed its slot
    to a queued run also names the run it continued as."""

    status: str
    continued_as: str | None = None


class QueueActivities:
    def __init__(self, target: RunTarget, config: QueueConfig) -> None:
        self._target = target
        self._config = config

    @activity.defn(name="queue_config")
    async def queue_config(self) -> QueueConfig:
        return self._config

    @activity.defn(name="secure_slot")
    async def secure_slot(self, visit: SlotVisit) -> SlotState:
        client = activity.client()
        slot_id = visit.scope.slot_id(visit.slot)
        for _ in range(5):  # a run that closes between our read and our signal: look again
            holder: str | None
            if visit.entry is not None:
                try:
                    started = await start_on_slot(
                        client, self._target, visit.scope, visit.slot, visit.entry.run_input
                    )
                except SlotBusyError as busy:
                    holder = busy.temporal_run_id
                else:
                    return SlotState(placed=True, run_id=started.temporal_run_id)
            else:
                current = await latest(client, slot_id, self._target)
                if current is None or current.status != WorkflowExecutionStatus.RUNNING:
                    return SlotState()
                holder = current.run_id
            if holder is None:
                continue
            try:
                await client.get_workflow_handle(slot_id, run_id=holder).signal(
                    OFFER_SIGNAL, visit.scope.queue_id, rpc_timeout=self._target.rpc_timeout
                )
            except RPCError as err:
                if err.status != RPCStatusCode.NOT_FOUND:
                    raise
                continue
            return SlotState(run_id=holder)
        raise RuntimeError(f"slot {slot_id} kept changing hands; trying again")

    @activity.defn(name="claim_next")
    async def claim_next(self, claim: ClaimNext) -> ClaimResult:
        """The queue's head for the claimant, or nothing (no queue, or it is empty). A repeated
        claim (this activity retried) gets the same answer: the update id is the claimant's."""
        handle = activity.client().get_workflow_handle(claim.queue_id)
        try:
            result: ClaimResult = await handle.execute_update(
                CLAIM_UPDATE,
                Claim(claim.slot, claim.claimant_run_id),
                id=f"claim-{claim.claimant_run_id}",
                result_type=ClaimResult,
                rpc_timeout=timedelta(seconds=9),
            )
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return ClaimResult()
            raise
        return result

    @activity.defn(name="watch_slot")
    async def watch_slot(self, watch: WatchSlot) -> SlotClosed:
        handle = activity.client().get_workflow_handle(watch.slot_id, run_id=watch.run_id)
        while True:
            activity.heartbeat()
            with contextlib.suppress(RPCError):
                async for event in handle.fetch_history_events(
                    wait_new_event=True,
                    event_filter_type=WorkflowHistoryEventFilterType.CLOSE_EVENT,
                    rpc_timeout=_WATCH_POLL,
                ):
                    attributes = event.workflow_execution_continued_as_new_event_attributes
                    continued = attributes.new_execution_run_id if attributes else None
                    return SlotClosed(
                        status=event.WhichOneof("attributes") or "closed",
                        continued_as=continued or None,
                    )
