"""The decisions of one scope, as pure code: who holds which slot, who waits and in which order,
what a cancel takes away, which run an Idempotency-Key made.

:class:`AgentScopeWorkflow` (the scope's coordinator) is its only user, so every decision of a
scope is made in one place, one at a time. It keeps these rules:

- **The bound.** A slot is busy while a run of ours holds it, while an execution we did not
  start holds its workflow id (*foreign*), and while it *drains*: its last run was closed from
  outside (terminated, timed out) and that run's agent may work until its lease runs out. A run
  is granted a slot only while fewer than N slots are busy, and only a free one.
- **Order.** Runs are granted in the order they were accepted. A start that will not wait
  (``on_busy=reject``) is granted only when nothing waits; a run whose grant could not start
  (its slot's id was held by a foreign execution) goes back to the head.
- **Exactly once.** A request id gets one answer, however often it is repeated; an
  Idempotency-Key makes one run, and a repeat gets that run whatever became of it (while the
  key is kept: :data:`RETENTION`).

No Temporal call is made here: the coordinator turns what this decides into starts, cancels and
timers, and reports back what the slots' executions did.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from agent_runner.contract import (
    Admission,
    AdmitAnswer,
    AdmitRequest,
    CancelAnswer,
    CancelEffect,
    OnBusy,
    RunOutcome,
    RunPhase,
    RunPolicy,
    RunRecord,
    RunRequest,
    RunState,
    ScopeLimits,
    ScopeView,
    SlotFinding,
    SlotState,
    SlotView,
    Waiting,
)
from agent_runner.ids import Scope, scope_for
from agent_runner.lease import FENCE_STRIDE, fence_base, lease_seconds
from agent_runner.validation import InvalidRunInputError, checked_request

# How long a key (and the record of a run that ended without a slot) is kept.
RETENTION = timedelta(hours=24)
# How long the answer to a request without a key is kept for its repeats (a caller's retries).
ANSWER_RETENTION = timedelta(minutes=10)
# How long the record of a run that reached a slot is kept after it ended: its slot's
# execution (found by visibility) tells its story after that.
SLOT_RECORD_RETENTION = timedelta(minutes=10)
ENDED_RECORDS_KEPT = 1000
KEYS_KEPT = 5000
ANSWERS_KEPT = 1000
# The bytes of requests a queue may hold: it is carried across continue-as-new, whose input
# Temporal caps at 2 MB.
QUEUE_BYTES_MAX = 1_000_000
CANCELLED = "cancelled"


@dataclass
class Entry:
    """A run the scope accepted."""

    run_id: str
    request: RunRequest
    accepted_at: datetime
    seq: int
    phase: RunPhase = RunPhase.QUEUED
    queued_at: datetime | None = None
    idempotency_key: str | None = None
    size: int = 0
    slot: int | None = None
    granted_at: datetime | None = None
    fence_base: int = 0
    temporal_run_id: str | None = None
    outcome: RunOutcome | None = None
    ended_at: datetime | None = None
    cancel_requested: bool = False

    @property
    def policy(self) -> RunPolicy:
        assert self.request.policy is not None, "accepted requests have their policy"
        return self.request.policy


@dataclass
class SlotHold:
    """A busy slot: held by our run ``run_id``, by a foreign execution, or draining."""

    slot: int
    run_id: str | None = None
    foreign: bool = False
    # The foreign execution's run id, when known.
    foreign_run_id: str | None = None
    free_at: datetime | None = None


@dataclass
class KeyRecord:
    key: str
    run_id: str
    fingerprint: str | None
    at: datetime
    admission: Admission = Admission.STARTED


@dataclass
class Answered:
    request_id: str
    answer: AdmitAnswer
    at: datetime


@dataclass
class ScopeState:
    """Everything a coordinator carries across continue-as-new."""

    limits: ScopeLimits = field(default_factory=ScopeLimits)
    entries: list[Entry] = field(default_factory=list)
    queue: list[str] = field(default_factory=list)
    slots: list[SlotHold] = field(default_factory=list)
    keys: list[KeyRecord] = field(default_factory=list)
    answers: list[Answered] = field(default_factory=list)
    # The fencing token base of the last run granted each slot (index: slot).
    fence_floors: list[int] = field(default_factory=list)
    queue_version: int = 0
    next_seq: int = 1


@dataclass(frozen=True)
class Grant:
    """A run granted a slot whose workflow the coordinator is to start."""

    run_id: str
    slot: int
    request: RunRequest
    fence_base: int
    idempotency_key: str | None
    queued_at: datetime | None


class ScopeBook:
    def __init__(self, scope: Scope, state: ScopeState, default_policy: RunPolicy) -> None:
        self.scope = scope
        self.limits = state.limits
        self.default_policy = default_policy
        self._entries = {entry.run_id: entry for entry in state.entries}
        self._queue = list(state.queue)
        self._slots = {hold.slot: hold for hold in state.slots}
        self._keys = {record.key: record for record in state.keys}
        self._answers = {answered.request_id: answered for answered in state.answers}
        self._fence_floors = list(state.fence_floors)
        self.queue_version = state.queue_version
        self._next_seq = state.next_seq
        self._queue_bytes = sum(self._entries[run_id].size for run_id in self._queue)

    def carried(self) -> ScopeState:
        return ScopeState(
            limits=self.limits,
            entries=list(self._entries.values()),
            queue=list(self._queue),
            slots=sorted(self._slots.values(), key=lambda hold: hold.slot),
            keys=list(self._keys.values()),
            answers=list(self._answers.values()),
            fence_floors=list(self._fence_floors),
            queue_version=self.queue_version,
            next_seq=self._next_seq,
        )

    # --- admission ------------------------------------------------------------------------------

    def admit(self, request: AdmitRequest, now: datetime, mint: Callable[[], str]) -> AdmitAnswer:
        """Start the run on a free slot, queue it, or refuse it; remember the answer."""
        key = request.idempotency_key
        if key is not None and (made := self._keys.get(key)) is not None:
            if made.fingerprint != request.fingerprint:
                return AdmitAnswer(request.request_id, Admission.KEY_REUSED)
            return self._again(AdmitAnswer(request.request_id, made.admission, made.run_id))
        earlier = self._answers.get(request.request_id)
        if key is None and earlier is not None:
            return self._again(earlier.answer)
        if request.not_after is not None and now > request.not_after:
            return AdmitAnswer(request.request_id, Admission.EXPIRED)
        try:
            run = checked_request(request.run, self.default_policy)
        except InvalidRunInputError as err:
            return AdmitAnswer(request.request_id, Admission.INVALID, reason=str(err))
        belongs = scope_for(
            self.scope.base, self.scope.kind, agent_type=run.agent_type, user_id=run.user_id
        )
        if belongs != self.scope:
            # Sent to another scope's coordinator (by another client): run here, its agent
            # would work beside its own scope's N.
            return AdmitAnswer(
                request.request_id,
                Admission.INVALID,
                reason=f"this run belongs to scope {belongs.label}, not {self.scope.label}",
            )
        slot = None if self._queue else self._free_slot()
        size = _size(run)
        if slot is None and request.on_busy == OnBusy.REJECT:
            return self._busy(request.request_id)
        if slot is None and self._full(size):
            return AdmitAnswer(request.request_id, Admission.FULL)
        entry = Entry(
            run_id=mint(),
            request=run,
            accepted_at=now,
            seq=self._next_seq,
            idempotency_key=key,
            size=size,
        )
        self._next_seq += 1
        self._entries[entry.run_id] = entry
        if slot is not None:
            self._grant(entry, slot, now)
            answer = AdmitAnswer(request.request_id, Admission.STARTED, entry.run_id)
        else:
            entry.queued_at = now
            self._queue.append(entry.run_id)
            self._queue_bytes += size
            self.queue_version += 1
            answer = AdmitAnswer(
                request.request_id, Admission.QUEUED, entry.run_id, len(self._queue)
            )
        self._remember(request, answer, now)
        return answer

    def _again(self, answer: AdmitAnswer) -> AdmitAnswer:
        """An earlier answer, given again with the run's place as it is now."""
        entry = self._entries.get(answer.run_id or "")
        position = self._position(entry) if entry is not None else None
        return replace(answer, queue_position=position, replayed=True)

    def _remember(self, request: AdmitRequest, answer: AdmitAnswer, now: datetime) -> None:
        key = request.idempotency_key
        if key is None:
            self._answers[request.request_id] = Answered(request.request_id, answer, now)
            _trim(self._answers, ANSWERS_KEPT)
        else:
            run_id = str(answer.run_id)
            self._keys[key] = KeyRecord(key, run_id, request.fingerprint, now, answer.admission)
            _trim(self._keys, KEYS_KEPT)

    def _busy(self, request_id: str) -> AdmitAnswer:
        holders = [
            entry
            for entry in self._entries.values()
            if entry.phase == RunPhase.GRANTED and entry.granted_at is not None
        ]
        oldest = min(holders, key=lambda entry: entry.granted_at or entry.accepted_at, default=None)
        return AdmitAnswer(
            request_id,
            Admission.BUSY,
            holder_run_id=oldest.run_id if oldest else None,
            holder_granted_at=oldest.granted_at if oldest else None,
            reason="runs are waiting" if self._queue else None,
        )

    def _full(self, size: int) -> bool:
        return (
            len(self._queue) >= self.limits.queue_max or self._queue_bytes + size > QUEUE_BYTES_MAX
        )

    # --- slots ----------------------------------------------------------------------------------

    def _free_slot(self) -> int | None:
        """The lowest free slot, while fewer than N are busy."""
        if len(self._slots) >= self.limits.slots:
            return None
        return next(slot for slot in range(self.limits.slots) if slot not in self._slots)

    def _grant(self, entry: Entry, slot: int, now: datetime) -> None:
        while len(self._fence_floors) <= slot:
            self._fence_floors.append(0)
        floor = self._fence_floors[slot]
        entry.fence_base = fence_base(_microseconds(now), floor + FENCE_STRIDE if floor else 0)
        self._fence_floors[slot] = entry.fence_base
        entry.phase, entry.slot, entry.granted_at = RunPhase.GRANTED, slot, now
        self._slots[slot] = SlotHold(slot, run_id=entry.run_id)

    def grant_waiting(self, now: datetime) -> None:
        """Give every free slot (while fewer than N are busy) to the queue's head."""
        self._drain(now)
        while self._queue and (slot := self._free_slot()) is not None:
            entry = self._entries[self._queue.pop(0)]
            self._queue_bytes -= entry.size
            self.queue_version += 1
            self._grant(entry, slot, now)

    def to_start(self) -> list[Grant]:
        """Runs granted a slot whose workflow has not started yet."""
        return [
            Grant(
                entry.run_id,
                entry.slot,
                entry.request,
                entry.fence_base,
                entry.idempotency_key,
                entry.queued_at,
            )
            for entry in self._entries.values()
            if entry.phase == RunPhase.GRANTED
            and entry.slot is not None
            and entry.temporal_run_id is None
        ]

    def started(self, run_id: str, temporal_run_id: str) -> bool:
        """The run's workflow started on its slot; True if it was cancelled meanwhile (the
        coordinator passes the cancel on)."""
        entry = self._entries[run_id]
        entry.temporal_run_id = temporal_run_id
        return entry.cancel_requested

    def refused(self, run_id: str, holder_run_id: str | None, now: datetime) -> None:
        """The run's slot id was held by an execution we did not start: the slot is foreign
        until that closes, and the run goes back to the head of the queue."""
        entry = self._entries[run_id]
        assert entry.slot is not None
        self._slots[entry.slot] = SlotHold(entry.slot, foreign=True, foreign_run_id=holder_run_id)
        self._requeue(entry, now)
        self.grant_waiting(now)

    def _requeue(self, entry: Entry, now: datetime) -> None:
        """A granted run whose workflow never started goes back to the head of the queue."""
        entry.phase, entry.slot, entry.granted_at = RunPhase.QUEUED, None, None
        if entry.cancel_requested:
            self._end(entry, RunOutcome(RunState.ERROR, error=CANCELLED), now)
            return
        entry.queued_at = entry.queued_at or now
        self._queue.insert(0, entry.run_id)
        self._queue_bytes += entry.size
        self.queue_version += 1

    def survey(self, findings: list[SlotFinding], now: datetime) -> None:
        """Starting afresh, perhaps with what a coordinator ended from outside carried: square
        the book with what holds each slot now (the server's word). A run of the book found
        running on its slot is watched; one whose start never happened waits at the head of
        the queue again; every other slot is what the server says."""
        by_slot = {finding.slot: finding for finding in findings}
        for finding in findings:
            self.raise_fence_floor(finding.slot, finding.fence_floor)
        for slot, hold in list(self._slots.items()):
            found = by_slot.get(slot)
            entry = self._entries.get(hold.run_id) if hold.run_id else None
            if entry is None:
                del self._slots[slot]  # foreign or draining: as the server says below
                continue
            runs_there = found is not None and found.state == SlotState.FOREIGN
            if runs_there and found is not None and found.holder_run_id == entry.run_id:
                entry.temporal_run_id = found.run_id
                by_slot.pop(slot)
            elif entry.temporal_run_id is None:
                del self._slots[slot]
                self._requeue(entry, now)
            else:
                by_slot.pop(slot, None)  # it ran and closed: its watcher reads how
        for slot, finding in by_slot.items():
            if slot in self._slots:
                continue
            if finding.state == SlotState.FOREIGN and finding.run_id:
                self.held_by_foreign(slot, finding.run_id)
            elif finding.state == SlotState.DRAINING and finding.free_at:
                self.draining(slot, finding.free_at)
        self.grant_waiting(now)

    def closed(self, run_id: str, outcome: RunOutcome, *, clean: bool, now: datetime) -> None:
        """The run's workflow closed. ``clean``: by its own code, which ends only once its
        agent stopped; else (terminated, timed out) its slot drains for one lease."""
        entry = self._entries[run_id]
        slot = entry.slot
        self._end(entry, outcome, now)
        if slot is not None and (hold := self._slots.get(slot)) and hold.run_id == run_id:
            self._release(slot, clean, lease_seconds(entry.policy.heartbeat_timeout_seconds), now)
        self.grant_waiting(now)

    def held_by_foreign(self, slot: int, foreign_run_id: str) -> None:
        """A coordinator starting afresh found an execution it did not start on the slot."""
        self._slots[slot] = SlotHold(slot, foreign=True, foreign_run_id=foreign_run_id)

    def draining(self, slot: int, free_at: datetime) -> None:
        """A coordinator starting afresh found the slot's last run closed from outside."""
        self._slots[slot] = SlotHold(slot, free_at=free_at)

    def foreign_closed(self, slot: int, *, clean: bool, lease: float, now: datetime) -> None:
        self._release(slot, clean, lease, now)
        self.grant_waiting(now)

    def _release(self, slot: int, clean: bool, lease: float, now: datetime) -> None:
        if clean:
            self._slots.pop(slot, None)
        else:
            self._slots[slot] = SlotHold(slot, free_at=now + timedelta(seconds=lease))

    def _drain(self, now: datetime) -> None:
        for slot, hold in list(self._slots.items()):
            if hold.free_at is not None and hold.free_at <= now:
                del self._slots[slot]

    def raise_fence_floor(self, slot: int, floor: int) -> None:
        while len(self._fence_floors) <= slot:
            self._fence_floors.append(0)
        self._fence_floors[slot] = max(self._fence_floors[slot], floor)

    # --- cancel ---------------------------------------------------------------------------------

    def cancel(self, run_id: str, now: datetime) -> tuple[CancelAnswer, bool]:
        """Take a waiting run out of the queue (it ends at once, never started), or mark a
        granted one cancelled; True when its workflow is to be told (it has started)."""
        entry = self._entries.get(run_id)
        if entry is None:
            return CancelAnswer(CancelEffect.UNKNOWN), False
        stop = False
        if entry.phase == RunPhase.QUEUED:
            self._queue.remove(run_id)
            self._queue_bytes -= entry.size
            self.queue_version += 1
            self._end(entry, RunOutcome(RunState.ERROR, error=CANCELLED), now)
            effect = CancelEffect.REMOVED
        elif entry.phase == RunPhase.ENDED:
            effect = CancelEffect.ENDED
        elif entry.cancel_requested:
            effect = CancelEffect.ALREADY_STOPPING
        else:
            entry.cancel_requested = True
            stop = entry.temporal_run_id is not None
            effect = CancelEffect.STOPPING
        return CancelAnswer(effect, self.record(run_id)), stop

    def _end(self, entry: Entry, outcome: RunOutcome, now: datetime) -> None:
        entry.phase = RunPhase.ENDED
        entry.outcome = replace(outcome, finished_at=outcome.finished_at or now)
        entry.ended_at = now

    # --- reads ----------------------------------------------------------------------------------

    def _position(self, entry: Entry) -> int | None:
        if entry.phase != RunPhase.QUEUED:
            return None
        return self._queue.index(entry.run_id) + 1

    def record(self, run_id: str) -> RunRecord | None:
        entry = self._entries.get(run_id)
        if entry is None:
            return None
        waiting = None
        if entry.phase == RunPhase.QUEUED:
            waiting = Waiting.QUEUE
        return RunRecord(
            run_id=entry.run_id,
            agent_type=entry.request.agent_type,
            user_id=entry.request.user_id,
            phase=entry.phase,
            accepted_at=entry.accepted_at,
            queued_at=entry.queued_at,
            queue_position=self._position(entry),
            slot=entry.slot,
            granted_at=entry.granted_at,
            # Where to look: its slot's id once granted, its coordinator's (the scope's) before.
            workflow_id=self.scope.slot_id(entry.slot) if entry.slot is not None else self.scope.id,
            temporal_run_id=entry.temporal_run_id,
            waiting_for=waiting,
            outcome=entry.outcome,
            idempotency_key=entry.idempotency_key,
            queue_version=self.queue_version,
            cancel_requested=entry.cancel_requested,
        )

    def view(self, offset: int, limit: int) -> ScopeView:
        shown = max(self.limits.slots, max(self._slots, default=-1) + 1)
        slots = [self._slot_view(slot) for slot in range(shown)]
        page = self._queue[max(0, offset) : max(0, offset) + max(0, limit)]
        queued = [record for run_id in page if (record := self.record(run_id))]
        return ScopeView(
            scope_id=self.scope.id,
            limits=self.limits,
            slots=slots,
            queued=queued,
            queue_length=len(self._queue),
            queue_version=self.queue_version,
        )

    def _slot_view(self, slot: int) -> SlotView:
        hold = self._slots.get(slot)
        if hold is None:
            return SlotView(slot, SlotState.FREE)
        if hold.run_id is not None:
            entry = self._entries[hold.run_id]
            return SlotView(slot, SlotState.HELD, hold.run_id, entry.temporal_run_id)
        if hold.foreign:
            return SlotView(slot, SlotState.FOREIGN, temporal_run_id=hold.foreign_run_id)
        return SlotView(slot, SlotState.DRAINING, free_at=hold.free_at)

    def held(self) -> list[tuple[int, str, str | None]]:
        """(slot, run id, its execution's run id) of every slot a run of ours holds."""
        return [
            (slot, hold.run_id, self._entries[hold.run_id].temporal_run_id)
            for slot, hold in sorted(self._slots.items())
            if hold.run_id is not None
        ]

    def foreign(self) -> list[tuple[int, str | None]]:
        return [
            (slot, hold.foreign_run_id)
            for slot, hold in sorted(self._slots.items())
            if hold.foreign
        ]

    def entry(self, run_id: str) -> Entry | None:
        return self._entries.get(run_id)

    @property
    def queue_length(self) -> int:
        return len(self._queue)

    def busy_slots(self) -> int:
        return len(self._slots)

    # --- time -----------------------------------------------------------------------------------

    def next_wakeup(self) -> datetime | None:
        """When the book changes by itself: a slot stops draining, a record or key expires."""
        times = [hold.free_at for hold in self._slots.values() if hold.free_at is not None]
        times += [expiry for entry in self._entries.values() if (expiry := _expiry(entry))]
        times += [record.at + RETENTION for record in self._keys.values()]
        times += [answered.at + ANSWER_RETENTION for answered in self._answers.values()]
        return min(times, default=None)

    def expire(self, now: datetime) -> None:
        """Forget ended runs, keys and answers past their retention (and beyond their count)."""
        ended = sorted(
            (entry for entry in self._entries.values() if entry.phase == RunPhase.ENDED),
            key=lambda entry: entry.ended_at or now,
        )
        excess = len(ended) - ENDED_RECORDS_KEPT
        for index, entry in enumerate(ended):
            expiry = _expiry(entry)
            if index < excess or (expiry is not None and expiry <= now):
                del self._entries[entry.run_id]
        for key, record in list(self._keys.items()):
            if record.at + RETENTION <= now:
                del self._keys[key]
        for request_id, answered in list(self._answers.items()):
            if answered.at + ANSWER_RETENTION <= now:
                del self._answers[request_id]
        self.grant_waiting(now)

    def idle(self) -> bool:
        """Nothing waits and no slot is busy."""
        return not self._queue and not self._slots

    def empty(self) -> bool:
        """Idle, and nothing kept for repeats or reads: the coordinator may close."""
        return self.idle() and not self._entries and not self._keys and not self._answers


def _expiry(entry: Entry) -> datetime | None:
    if entry.ended_at is None:
        return None
    kept = SLOT_RECORD_RETENTION if entry.granted_at is not None else RETENTION
    return entry.ended_at + kept


def _trim(table: dict[str, Any], kept: int) -> None:
    """Drop the oldest (first inserted) items beyond ``kept``."""
    while len(table) > kept:
        del table[next(iter(table))]


def _size(request: RunRequest) -> int:
    """About what the request weighs in the carried state (bytes of JSON)."""
    return 300 + len(json.dumps(request.params, separators=(",", ":"), default=str))


def _microseconds(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)
