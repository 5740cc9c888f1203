"""AgentQueueWorkflow: the queue of one scope, FIFO, durable, and never the thing that bounds
how many agents work. The slots do that (fixed workflow ids, :mod:`agent_runner.runs.slots`);
the queue only decides who gets a slot next, so a bug here can delay a run, never add one.

While runs wait, every slot of the scope is either handed to the queue's head or its run holds
an *offer*: when that run ends, it claims the next queued run from here and continues as it
(continue-as-new keeps the slot's workflow id open throughout, so no start can slip in between).
A slot whose run closed without claiming (terminated, timed out) is seen by a watcher and given
to the head at once; the new run's agent still waits for the closed run's attempt to stop.

The workflow runs while runs wait (or a claimed run has not yet been seen in its slot), and
continues as new when its history grows long, carrying the queue. Its memo says where every run
it accepted is (``r:<run id>``), which is how status reads find queued runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

from workflows.queue_display import QueueDisplay, carried, queued
from workflows.queue_requests import QueueRequests

with workflow.unsafe.imports_passed_through():
    from activities.queue_ops import SlotClosed, SlotState, SlotVisit, WatchSlot
    from agent_runner.queue_types import (
        CANCEL_UPDATE,
        CLAIM_UPDATE,
        ENQUEUE_UPDATE,
        QUEUE_WORKFLOW_TYPE,
        Claim,
        Claimed,
        ClaimResult,
        EnqueueRequest,
        EnqueueResult,
        QueueConfig,
        QueueEntry,
        QueueInput,
        QueueState,
    )

# Patches (workflow.patched): queues recorded before them replay as they ran.
REMEMBER_AT_ACCEPT = "remember-at-accept"
WATCH_FIRST_CLAIMANT = "watch-first-claimant"
_QUICK_TIMEOUT = timedelta(seconds=10)
_QUICK_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=2))


@workflow.defn(name=QUEUE_WORKFLOW_TYPE)
class AgentQueueWorkflow:
    @workflow.init
    def __init__(self, queue_input: QueueInput) -> None:
        self._scope = queue_input.scope
        self._state = queue_input.state or QueueState()
        self._ready = queue_input.state is not None
        self._dispatching = asyncio.Lock()
        # What this execution has seen of the slots: the open run of each, and which runs hold
        # an offer. Not carried across continue-as-new: the next execution looks again.
        self._slots: dict[int, str] = {}
        self._offered: set[str] = set()
        self._watchers: dict[int, asyncio.Task[None]] = {}
        self._dirty = True
        self._display = QueueDisplay(self._scope)
        self._requests = QueueRequests(self._scope, self._state, self._display)

    @workflow.run
    async def run(self, queue_input: QueueInput) -> None:
        if not self._ready:
            self._state.config = await workflow.execute_local_activity(
                "queue_config",
                result_type=QueueConfig,
                start_to_close_timeout=_QUICK_TIMEOUT,
                retry_policy=_QUICK_RETRY,
            )
            self._ready = True
        for claimed in self._state.claimed.values():
            # Carried over: watch the claimant again to see it become the claimed run. A slot
            # may carry a chain of claims (A claimed, became B, B claimed...): watch its first
            # claimant; each close leads to the next (watching only the last left the others
            # claimed, and their runs PENDING, for ever).
            if workflow.patched(WATCH_FIRST_CLAIMANT):
                self._slots.setdefault(claimed.slot, claimed.claimant_run_id)
            else:  # as queues recorded before the patch did
                self._slots[claimed.slot] = claimed.claimant_run_id
            self._watch(claimed.slot)
        while True:
            await workflow.wait_condition(
                lambda: self._dirty or self._done() or self._should_continue()
            )
            if self._dirty:
                self._dirty = False
                await self._dispatch()
                continue
            await workflow.wait_condition(workflow.all_handlers_finished)
            if not self._ending():
                continue
            await self._stop_watching()
            # Nothing may run between this check and the end: an update still running would
            # be aborted (and its caller would try it on the next execution).
            if not self._ending():
                self._watch_again()
                continue
            self._display.publish(self._state)
            if self._done():
                return
            workflow.continue_as_new(
                QueueInput(self._scope, self._state), memo=carried(self._state)
            )

    # --- handlers -------------------------------------------------------------------------

    @workflow.update(name=ENQUEUE_UPDATE)
    async def enqueue(self, requests: list[EnqueueRequest]) -> list[EnqueueResult]:
        await workflow.wait_condition(lambda: self._ready)
        early = workflow.patched(REMEMBER_AT_ACCEPT)
        answers: list[EnqueueResult | QueueEntry] = [
            self._requests.accept(request, remember=early) for request in requests
        ]
        self._dirty = True
        await self._dispatch()
        results = [self._requests.answer(answer) for answer in answers]
        if not early:  # as queues recorded before the patch did
            for request, result in zip(requests, results, strict=True):
                if result.run_id:
                    self._requests.remember(request, result)
        return results

    @workflow.update(name=CLAIM_UPDATE)
    async def claim(self, claim: Claim) -> ClaimResult:
        """A slot's run is ending and holds an offer: give it the queue's head."""
        await workflow.wait_condition(lambda: self._ready)
        for claimed in self._state.claimed.values():
            if claimed.claimant_run_id == claim.claimant_run_id:  # a repeated claim
                return ClaimResult(claimed.entry, more=claimed.entry.run_input.offered)
        self._offered.discard(claim.claimant_run_id)
        self._slots[claim.slot] = claim.claimant_run_id
        self._watch(claim.slot)
        if not self._state.queue:
            return ClaimResult()
        head = self._state.queue.pop(0)
        more = bool(self._state.queue)
        entry = replace(head, run_input=replace(head.run_input, offered=more))
        self._state.claimed[entry.run_id] = Claimed(entry, claim.slot, claim.claimant_run_id)
        self._display.record(entry.run_id, {"state": "claimed", "slot": claim.slot})
        self._display.publish(self._state)
        return ClaimResult(entry, more)

    @workflow.update(name=CANCEL_UPDATE)
    def cancel_queued(self, run_id: str) -> bool:
        """Take a run out of the queue before it started; False if it is not waiting here."""
        for index, entry in enumerate(self._state.queue):
            if entry.run_id == run_id:
                del self._state.queue[index]
                cancelled = {"state": "cancelled", "at": workflow.now().isoformat()}
                self._display.record(run_id, {**queued(entry), **cancelled})
                self._display.publish(self._state)
                return True
        return False

    # --- the queue --------------------------------------------------------------------------

    def _ending(self) -> bool:
        return workflow.all_handlers_finished() and (self._done() or self._should_continue())

    def _done(self) -> bool:
        return not self._state.queue and not self._state.claimed and not self._dirty

    def _should_continue(self) -> bool:
        return workflow.info().is_continue_as_new_suggested()

    # --- the slots --------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        """While runs wait: every slot either runs the head, or its run holds an offer."""
        async with self._dispatching:
            for slot in range(self._state.config.slots):
                if not self._state.queue:
                    break
                run = self._slots.get(slot)
                if run is not None and run in self._offered:
                    self._watch(slot)
                    continue
                if self._handing_over(slot):
                    # Its run claimed a queued run and is becoming it: nothing to offer (a
                    # signal now would only race the run's continue-as-new).
                    continue
                head = self._state.queue[0]
                entry = replace(
                    head, run_input=replace(head.run_input, offered=len(self._state.queue) > 1)
                )
                outcome: SlotState = await workflow.execute_local_activity(
                    "secure_slot",
                    SlotVisit(self._scope, slot, entry),
                    result_type=SlotState,
                    start_to_close_timeout=_QUICK_TIMEOUT,
                    retry_policy=_QUICK_RETRY,
                )
                if outcome.run_id is None:
                    continue
                self._slots[slot] = outcome.run_id
                if outcome.placed:
                    self._state.queue.remove(head)
                    self._display.started(entry, slot, outcome.run_id)
                    if entry.run_input.offered:
                        self._offered.add(outcome.run_id)
                else:
                    self._offered.add(outcome.run_id)
                self._watch(slot)
            self._display.publish(self._state)

    def _watch(self, slot: int) -> None:
        watcher = self._watchers.get(slot)
        if watcher is None or watcher.done():
            self._watchers[slot] = asyncio.create_task(self._watch_slot(slot))

    async def _watch_slot(self, slot: int) -> None:
        while (run := self._slots.get(slot)) is not None and self._needs_watching(slot):
            closed: SlotClosed = await workflow.execute_activity(
                "watch_slot",
                WatchSlot(self._scope.slot_id(slot), run),
                result_type=SlotClosed,
                start_to_close_timeout=timedelta(days=365),
                heartbeat_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=5)),
            )
            self._closed(slot, run, closed)

    def _handing_over(self, slot: int) -> bool:
        return any(claimed.slot == slot for claimed in self._state.claimed.values())

    def _needs_watching(self, slot: int) -> bool:
        return bool(self._state.queue) or self._handing_over(slot)

    def _closed(self, slot: int, run: str, closed: SlotClosed) -> None:
        """The slot's run ``run`` closed: follow it to the run it continued as, or free the slot
        (and put a run it had claimed but never became back at the head)."""
        self._offered.discard(run)
        if self._slots.get(slot) == run:
            del self._slots[slot]
        for run_id, claimed in list(self._state.claimed.items()):
            if claimed.claimant_run_id != run:
                continue
            entry = claimed.entry
            del self._state.claimed[run_id]
            if closed.continued_as:
                self._slots[slot] = closed.continued_as
                self._display.started(entry, slot, closed.continued_as)
                if entry.run_input.offered:
                    self._offered.add(closed.continued_as)
            else:
                self._state.queue.insert(0, entry)
                self._display.record(run_id, queued(entry))
        self._dirty = True

    def _watch_again(self) -> None:
        for slot in list(self._slots):
            if self._needs_watching(slot):
                self._watch(slot)

    async def _stop_watching(self) -> None:
        for watcher in self._watchers.values():
            watcher.cancel()
        for watcher in self._watchers.values():
            with contextlib.suppress(asyncio.CancelledError, BaseException):
                await watcher
        self._watchers.clear()
