"""The decisions of one scope, as pure code: who holds which slot, who waits and in which order,
what a cancel takes away, which run an Idempotency-Key made.

:class:`AgentScopeWorkflow` (the scope's coordinator) is its only user, so every decision of a
scope is made in one place, one at a time. It keeps these rules:

- **The bound.** A slot is busy while a run of ours holds it, while an execution we did not
  start holds its workflow id (*foreign*), and while it *drains*: its last run was closed from
  outside (terminated, timed out) and that run's agent may work until its lease runs out. A run
  is granted a slot only while fewer than N slots are busy, and only a free one.
- **Order.** Waiting runs are granted by priority (1 first), then in the order they were
  accepted; a run that has waited ``aging_seconds`` counts as priority 1, so none starves. With
  fair shares on, runs of one priority are granted to their fairness keys by weighted
  round-robin (stride scheduling), in order within a key. A start that will not wait
  (``on_busy=reject``) is granted only when nothing waits; a run whose grant could not start
  (its slot's id was held by a foreign execution) goes back to the queue's head. A run
  past its ``queue_timeout_seconds`` leaves the queue, never started.
- **Exactly once.** A request id gets one answer, however often it is repeated; an
  Idempotency-Key makes one run, and a repeat gets that run whatever became of it (while the
  key is kept: :data:`RETENTION`).

No Temporal call is made here: the coordinator turns what this decides into starts, cancels and
timers, and reports back what the slots' executions did.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from agent_runner.contract import (
    EXPIRED_IN_QUEUE,
    PRIORITY_DEFAULT,
    PRIORITY_FIRST,
    PRIORITY_LAST,
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
from agent_runner.validation import InvalidRunInputError, check_admission, checked_request

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
# The bytes of requests a queue may hold, as counted before the byte budget (_size).
QUEUE_BYTES_MAX = 1_000_000
# The byte budget (a book made ``budgeted``): everything carried across continue-as-new, whose
# input Temporal caps at 2 MB (2,097,152 bytes), counted as the JSON it is carried as.
# The open runs (waiting and working): past it a start is refused as FULL.
OPEN_BYTES_MAX = 800_000
# Kept for reads and repeats, the oldest forgotten first past their budget.
# Ended records get the most: a run that ended while it waited is told by nothing else (a
# 30-minute randomized run ended about 300 such runs, about 270 KB).
ENDED_BYTES_MAX = 400_000
KEYS_BYTES_MAX = 250_000
ANSWERS_BYTES_MAX = 150_000
# The rest is bounded by counts: fairness passes (PASSES_KEPT keys of at most 128 characters,
# about 155 KB), durations (about 50 KB), the limits' weights (about 140 KB), slots and fences
# (MAX_SLOTS, about 15 KB): at most about 1.95 MB in all.
CANCELLED = "cancelled"
# The recent durations kept per agent type (a waiting run's eta is their median), and the agent
# types kept.
DURATIONS_KEPT = 20
DURATION_TYPES_KEPT = 100
# The fairness keys whose place in the round-robin is kept once they have nothing waiting.
PASSES_KEPT = 1000


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
    priority: int = PRIORITY_DEFAULT
    fairness_key: str | None = None
    # An on_busy=replace start: served before every other waiting run, and not before the run
    # it replaced (``replacing``) has left its slot.
    jumps: bool = False
    replacing: str | None = None
    # The run that replaced this one (cancelled it to take its slot).
    replaced_by: str | None = None

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
    # Fair shares: each fairness key's pass (its next turn; it grows by 1/weight per grant)
    # and the pass of the last grant. A book made ``rank_clocks`` keeps a pass per key and
    # priority ("<rank> <key>") and, per priority (its rank, as text), the turn of its last
    # grant; its fair_clock stays as it was carried.
    passes: dict[str, float] = field(default_factory=dict)
    fair_clock: float = 0.0
    rank_clocks: dict[str, float] = field(default_factory=dict)
    # The last DURATIONS_KEPT durations (seconds on a slot) of each agent type's runs.
    durations: dict[str, list[float]] = field(default_factory=dict)


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
    def __init__(
        self,
        scope: Scope,
        state: ScopeState,
        default_policy: RunPolicy,
        *,
        budgeted: bool = True,
        rank_clocks: bool = True,
    ) -> None:
        """``budgeted``: keep what it carries within the byte budget (OPEN_BYTES_MAX and the
        rest); ``rank_clocks``: a key that begins to wait again at a priority takes its turns
        from where that priority's service has got to (see _turn_of). Each False only for a
        coordinator execution begun before it (its history replays as it ran)."""
        self.scope = scope
        self.budgeted = budgeted
        self.rank_clocks = rank_clocks
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
        self._passes = dict(state.passes)
        self._fair_clock = state.fair_clock
        self._rank_clocks = dict(state.rank_clocks)
        self._durations = {kind: list(times) for kind, times in state.durations.items()}
        # The ended runs' records, oldest end first, with their weight; keys' and answers'.
        ended = sorted(
            (entry for entry in self._entries.values() if entry.phase == RunPhase.ENDED),
            key=lambda entry: (entry.ended_at or _EPOCH, entry.seq),
        )
        self._ended = {entry.run_id: _weight(entry) if budgeted else 0 for entry in ended}
        self._ended_bytes = sum(self._ended.values())
        self._keys_bytes = sum(map(_key_weight, self._keys.values()))
        self._answers_bytes = sum(map(_answer_weight, self._answers.values()))
        # The book's time: the latest moment it was told (reads without one use it).
        self._now: datetime | None = None
        # Runs a replace cancelled whose workflows are to be told (the coordinator takes them).
        self._stops: list[str] = []
        # The service order, worked out once per queue version and moment (reads ask often).
        self._order_cache: tuple[tuple[Any, ...], list[str], dict[str, int]] | None = None
        self._waits_cache: tuple[tuple[Any, ...], dict[str, Any]] | None = None
        # Runs closed (their durations change the etas).
        self._closes = 0
        # Set by the coordinator while the limits it holds may be out of date (it was told they
        # changed, or its last read's second ran out) until a read comes back: no slot is given
        # meanwhile. A slot freed in the same workflow task as a change's signal went by the
        # old limits before (chaos seed 17: fair shares turned off, two runs granted in fair
        # order after its coordinator's worker was killed and the task came back 10 s later).
        self.hold_grants = False

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
            passes=dict(self._passes),
            fair_clock=self._fair_clock,
            rank_clocks=dict(self._rank_clocks),
            durations={kind: list(times) for kind, times in self._durations.items()},
        )

    # --- admission ------------------------------------------------------------------------------

    def admit(
        self,
        request: AdmitRequest,
        now: datetime,
        mint: Callable[[], str],
        *,
        late: bool | None = None,
    ) -> AdmitAnswer:
        """Start the run on a free slot, queue it, or refuse it; remember the answer.

        ``late``: whether the request came past its ``not_after`` as the coordinator judged it
        from its history (see ADMIT_BY_HISTORY in workflows/scope.py); None: by ``now``."""
        self._now = now
        key = request.idempotency_key
        if key is not None and (made := self._keys.get(key)) is not None:
            if made.fingerprint != request.fingerprint:
                return AdmitAnswer(request.request_id, Admission.KEY_REUSED)
            return self._again(AdmitAnswer(request.request_id, made.admission, made.run_id))
        earlier = self._answers.get(request.request_id)
        if key is None and earlier is not None:
            return self._again(earlier.answer)
        if late is None:
            late = request.not_after is not None and now > request.not_after
        if late:
            return AdmitAnswer(request.request_id, Admission.EXPIRED)
        try:
            run = checked_request(request.run, self.default_policy)
            check_admission(request)
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
        if request.on_busy == OnBusy.ATTACH and (same := self._open_like(run)) is not None:
            attached = AdmitAnswer(
                request.request_id, Admission.ATTACHED, same.run_id, self._position(same)
            )
            self._remember(request, attached, now)
            return attached
        slot = None if self._queue else self._free_slot()
        entry = Entry(
            run_id="",
            request=run,
            accepted_at=now,
            seq=self._next_seq,
            idempotency_key=key,
            priority=request.priority,
            fairness_key=request.fairness_key,
            jumps=request.on_busy == OnBusy.REPLACE,
            queued_at=now,
        )
        entry.size = _weight(entry) + RUN_ID_BYTES if self.budgeted else _size(run)
        if slot is None and request.on_busy == OnBusy.REJECT:
            return self._busy(request.request_id)
        if self._full(entry.size, queued=slot is None):
            return AdmitAnswer(request.request_id, Admission.FULL)
        entry.run_id, entry.queued_at = mint(), None
        size = entry.size
        self._next_seq += 1
        self._entries[entry.run_id] = entry
        replaced = self._replace_for(entry) if slot is None and entry.jumps else None
        if slot is not None:
            self._grant(entry, slot, now)
            answer = AdmitAnswer(request.request_id, Admission.STARTED, entry.run_id)
        else:
            entry.queued_at = now
            self._queue.append(entry.run_id)
            self._queue_bytes += size
            self.queue_version += 1
            answer = AdmitAnswer(
                request.request_id,
                Admission.QUEUED,
                entry.run_id,
                self._position(entry),
                replaced_run_id=replaced,
            )
        self._remember(request, answer, now)
        return answer

    def _replace_for(self, entry: Entry) -> str | None:
        """Cancel the oldest working run not already stopping, for ``entry`` to take its slot
        once it is free (it waits first in line meanwhile); its id, or None when none is."""
        working = [
            held
            for held in self._entries.values()
            if held.phase == RunPhase.GRANTED and not held.cancel_requested
        ]
        if not working:
            return None
        victim = min(working, key=lambda held: (held.granted_at or held.accepted_at, held.seq))
        victim.cancel_requested = True
        victim.replaced_by = entry.run_id
        entry.replacing = victim.run_id
        if victim.temporal_run_id is not None:
            self._stops.append(victim.run_id)
        return victim.run_id

    def take_stops(self) -> list[str]:
        """The runs whose workflows are to be told to cancel (a replace cancelled them)."""
        stops, self._stops = self._stops, []
        return stops

    def _open_like(self, run: RunRequest) -> Entry | None:
        """The oldest open run (waiting or on a slot, not being cancelled) of the same agent
        type, user and params."""
        params = _canonical(run.params)
        return min(
            (
                entry
                for entry in self._entries.values()
                if entry.phase != RunPhase.ENDED
                and not entry.cancel_requested
                and entry.request.agent_type == run.agent_type
                and entry.request.user_id == run.user_id
                and _canonical(entry.request.params) == params
            ),
            key=lambda entry: entry.seq,
            default=None,
        )

    def answered(self, request: AdmitRequest) -> bool:
        """Whether an admit of ``request`` would be answered from memory (its key's run, or a
        keyless request's answer)."""
        key = request.idempotency_key
        if key is not None:
            return key in self._keys
        return request.request_id in self._answers

    def _again(self, answer: AdmitAnswer) -> AdmitAnswer:
        """An earlier answer, given again with the run's place as it is now."""
        entry = self._entries.get(answer.run_id or "")
        position = self._position(entry) if entry is not None else None
        # A replace's run still says whom it replaced (a key's record keeps no answer).
        replaced = entry.replacing if entry is not None else answer.replaced_run_id
        return replace(answer, queue_position=position, replayed=True, replaced_run_id=replaced)

    def _remember(self, request: AdmitRequest, answer: AdmitAnswer, now: datetime) -> None:
        key = request.idempotency_key
        if key is None:
            self._drop_answer(request.request_id)
            answered = Answered(request.request_id, answer, now)
            self._answers[request.request_id] = answered
            self._answers_bytes += _answer_weight(answered)
            while self._answers and (
                len(self._answers) > ANSWERS_KEPT
                or (self.budgeted and self._answers_bytes > ANSWERS_BYTES_MAX)
            ):
                self._drop_answer(next(iter(self._answers)))
        else:
            self._drop_key(key)
            made = KeyRecord(key, str(answer.run_id), request.fingerprint, now, answer.admission)
            self._keys[key] = made
            self._keys_bytes += _key_weight(made)
            while self._keys and (
                len(self._keys) > KEYS_KEPT or (self.budgeted and self._keys_bytes > KEYS_BYTES_MAX)
            ):
                self._drop_key(next(iter(self._keys)))

    def _drop_key(self, key: str) -> None:
        if (made := self._keys.pop(key, None)) is not None:
            self._keys_bytes -= _key_weight(made)

    def _drop_answer(self, request_id: str) -> None:
        if (answered := self._answers.pop(request_id, None)) is not None:
            self._answers_bytes -= _answer_weight(answered)

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
            reason="paused" if self.limits.paused else "runs are waiting" if self._queue else None,
        )

    def _full(self, size: int, *, queued: bool) -> bool:
        """Whether a start of ``size`` bytes finds no room: past queue_max (one to queue), or
        past the open runs' byte budget (any start, once budgeted)."""
        if queued and len(self._queue) >= self.limits.queue_max:
            return True
        if self.budgeted:
            return self._open_bytes() + size > OPEN_BYTES_MAX
        return queued and self._queue_bytes + size > QUEUE_BYTES_MAX

    def _open_bytes(self) -> int:
        """What the waiting and the working runs weigh."""
        working = (self._entries[hold.run_id] for hold in self._slots.values() if hold.run_id)
        return self._queue_bytes + sum(entry.size for entry in working)

    # --- slots ----------------------------------------------------------------------------------

    def _free_slot(self) -> int | None:
        """The lowest free slot, while fewer than N are busy, the scope is not paused and the
        limits are not being read again (``hold_grants``)."""
        if len(self._slots) >= self.limits.slots or self.limits.paused or self.hold_grants:
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
        """End the runs past their time in the queue, then give every free slot (while fewer
        than N are busy) to the next run in the service order."""
        self._now = now
        self._drain(now)
        self._expire_waiting(now)
        self._keep_ended_within_budget()
        while self._queue and (slot := self._free_slot()) is not None:
            run_id = next((run_id for run_id in self._order(now) if self._ready(run_id)), None)
            if run_id is None:
                return
            entry = self._entries[run_id]
            self._take_from_queue(entry)
            if self.limits.fair_shares:
                self._take_turn(entry, now)
            self._grant(entry, slot, now)

    def _take_from_queue(self, entry: Entry) -> None:
        self._queue.remove(entry.run_id)
        self._queue_bytes -= entry.size
        self.queue_version += 1

    def _ready(self, run_id: str) -> bool:
        """Whether a waiting run may be granted now: a replacement only once the run it
        replaced has left its slot (its workflow closed, and its slot drained if it was closed
        from outside), so the two agents never work at once, whatever slot frees first."""
        replaced = self._entries.get(self._entries[run_id].replacing or "")
        if replaced is None:
            return True
        return replaced.phase == RunPhase.ENDED and (
            replaced.slot is None or replaced.slot not in self._slots
        )

    def _expire_waiting(self, now: datetime) -> None:
        for run_id in list(self._queue):
            entry = self._entries[run_id]
            deadline = _queue_deadline(entry)
            if deadline is not None and deadline <= now:
                self._queue.remove(run_id)
                self._queue_bytes -= entry.size
                self.queue_version += 1
                self._end(entry, RunOutcome(RunState.ERROR, error=EXPIRED_IN_QUEUE), now)

    # --- the service order ----------------------------------------------------------------------

    def _rank(self, entry: Entry, now: datetime) -> int:
        """Its priority, or 1 once it has waited aging_seconds; 0 for a replace."""
        if entry.jumps:
            return 0
        waited = now - (entry.queued_at or now)
        if waited >= timedelta(seconds=self.limits.aging_seconds):
            return PRIORITY_FIRST
        return entry.priority

    def _fair_key(self, entry: Entry) -> str:
        return entry.fairness_key or entry.request.user_id

    def _weight(self, key: str) -> int:
        return max(1, self.limits.weights.get(key, 1))

    def _turn_of(
        self, key: str, rank: int, passes: dict[str, float], clock: float, floors: dict[str, float]
    ) -> float:
        """When the key's next grant at ``rank`` comes: its pass, never behind the clock (a
        key that waited for nothing banks no turns). Since rank clocks each priority is a
        round-robin of its own: a pass per key and priority, and the priority's clock is the
        turn of its last grant (``floors``). Before, one clock that never passed a waiting
        key's turn (see _take_turn) was held back by runs waiting at a lower priority, and a
        key back after a moment with nothing queued took the turns another had been granted
        meanwhile (chaos seed 93151: eleven grants in a row)."""
        if self.rank_clocks:
            floor = floors.get(str(rank), 0.0)
            return max(passes.get(_pass_key(key, rank), floor), floor)
        return max(passes.get(key, clock), clock)

    def _take_turn(self, entry: Entry, now: datetime) -> None:
        key, rank = self._fair_key(entry), self._rank(entry, now)
        turn = self._turn_of(key, rank, self._passes, self._fair_clock, self._rank_clocks)
        if self.rank_clocks:
            self._passes[_pass_key(key, rank)] = turn + 1 / self._weight(key)
            self._rank_clocks[str(rank)] = turn
            waiting = {
                _pass_key(self._fair_key(queued), self._rank(queued, now))
                for queued in (self._entries[run_id] for run_id in self._queue)
            }
            for known, passed in list(self._passes.items()):
                # A pass at or behind its priority's clock counts as the clock (and one kept
                # per key only, from an execution before rank clocks, no more).
                rank_text, _, _ = known.rpartition(" ")
                floor = self._rank_clocks.get(rank_text) if rank_text else None
                if known not in waiting and (floor is None or passed <= floor):
                    del self._passes[known]
            _trim(self._passes, PASSES_KEPT)
            return
        self._passes[key] = turn + 1 / self._weight(key)
        waiting = {self._fair_key(self._entries[run_id]) for run_id in self._queue}
        if self.budgeted:
            # The clock never passes a waiting key's turn: a grant at another priority (or an
            # aged run) would otherwise take the turns a backlogged key had earned (found by
            # the randomized run's fairness phase: 3:1 fell to 0.66 with mixed priorities).
            earned = (self._passes.get(waiting_key, turn) for waiting_key in waiting)
            self._fair_clock = max(self._fair_clock, min([turn, *earned]))
        else:
            self._fair_clock = turn
        for known, passed in list(self._passes.items()):
            if known not in waiting and passed <= self._fair_clock:
                del self._passes[known]
        _trim(self._passes, PASSES_KEPT)

    def _order(self, now: datetime) -> list[str]:
        """The waiting runs in the order they would be granted slots from ``now``."""
        limits = self.limits
        cache_key: tuple[Any, ...] = (self.queue_version, now, limits.fair_shares)
        cache_key += (limits.aging_seconds, tuple(sorted(limits.weights.items())), self._fair_clock)
        cache_key += tuple(sorted(self._rank_clocks.items()))
        if self._order_cache is not None and self._order_cache[0] == cache_key:
            return self._order_cache[1]
        by_rank: dict[int, list[str]] = {}
        for run_id in self._queue:
            by_rank.setdefault(self._rank(self._entries[run_id], now), []).append(run_id)
        order: list[str] = []
        passes, clock, floors = dict(self._passes), self._fair_clock, dict(self._rank_clocks)
        for rank in sorted(by_rank):
            if not limits.fair_shares:
                order += by_rank[rank]
                continue
            keyed: dict[str, list[str]] = {}
            for run_id in by_rank[rank]:
                keyed.setdefault(self._fair_key(self._entries[run_id]), []).append(run_id)
            # (turn, place of the key's first run, key): ties go to the key that waited first.
            turns = [(self._turn_of(key, rank, passes, clock, floors), index, key)
                     for index, key in enumerate(keyed)]  # fmt: skip
            heapq.heapify(turns)
            heads = dict.fromkeys(keyed, 0)
            while turns:
                turn, index, key = heapq.heappop(turns)
                order.append(keyed[key][heads[key]])
                heads[key] += 1
                held = _pass_key(key, rank) if self.rank_clocks else key
                passes[held], clock = turn + 1 / self._weight(key), turn
                floors[str(rank)] = turn
                if heads[key] < len(keyed[key]):
                    heapq.heappush(turns, (passes[held], index, key))
        self._order_cache = (
            cache_key,
            order,
            {run_id: index for index, run_id in enumerate(order)},
        )
        return order

    def _place(self, run_id: str, now: datetime) -> int:
        """Its index in the service order from ``now``."""
        self._order(now)
        assert self._order_cache is not None
        return self._order_cache[2][run_id]

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

    def took_slot(
        self, run_id: str, slot: int, fence_base: int, temporal_run_id: str, at: datetime
    ) -> bool:
        """A coordinator that can no longer be asked started this run's workflow on ``slot``
        itself (its history says so): the run holds the slot and has started, whatever the
        state that coordinator was handed says of it. False if the book does not know the run,
        or it has ended."""
        entry = self._entries.get(run_id)
        if entry is None or entry.phase == RunPhase.ENDED:
            return False
        if run_id in self._queue:
            self._take_from_queue(entry)
        hold = self._slots.get(entry.slot) if entry.slot is not None else None
        if hold is not None and hold.run_id == run_id:
            del self._slots[hold.slot]
        other = self._slots.get(slot)
        displaced = self._entries.get(other.run_id) if other and other.run_id else None
        if displaced is not None and displaced is not entry and displaced.temporal_run_id is None:
            del self._slots[slot]
            self._requeue(displaced, at)  # its start never happened, as the survey would say
        self.raise_fence_floor(slot, fence_base)
        entry.phase, entry.slot, entry.fence_base = RunPhase.GRANTED, slot, fence_base
        entry.granted_at = at
        entry.temporal_run_id = temporal_run_id
        self._slots[slot] = SlotHold(slot, run_id=run_id)
        return True

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
        self.closed_before(run_id, outcome, clean=clean, now=now)
        self.grant_waiting(now)

    def closed_before(
        self, run_id: str, outcome: RunOutcome, *, clean: bool, now: datetime
    ) -> None:
        """:meth:`closed` without giving a slot or ending a waiting run: for a coordinator
        that can no longer be asked, whose successor goes on from its book."""
        entry = self._entries[run_id]
        slot = entry.slot
        self._end(entry, outcome, now)
        self._closes += 1
        if entry.granted_at is not None:
            times = self._durations.pop(entry.request.agent_type, [])
            times.append(max(0.0, (now - entry.granted_at).total_seconds()))
            self._durations[entry.request.agent_type] = times[-DURATIONS_KEPT:]
            _trim(self._durations, DURATION_TYPES_KEPT)
        if slot is not None and (hold := self._slots.get(slot)) and hold.run_id == run_id:
            self._release(slot, clean, lease_seconds(entry.policy.heartbeat_timeout_seconds), now)

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
        self._now = now
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
        answer = CancelAnswer(effect, self.record(run_id))
        self._keep_ended_within_budget()
        return answer, stop

    def _end(self, entry: Entry, outcome: RunOutcome, now: datetime) -> None:
        entry.phase = RunPhase.ENDED
        entry.outcome = replace(outcome, finished_at=outcome.finished_at or now)
        entry.ended_at = now
        weight = _weight(entry) if self.budgeted else 0
        self._ended_bytes += weight - self._ended.pop(entry.run_id, 0)
        self._ended[entry.run_id] = weight

    def _forget(self, run_id: str) -> None:
        """Drop an ended run's record."""
        del self._entries[run_id]
        self._ended_bytes -= self._ended.pop(run_id, 0)

    def _keep_ended_within_budget(self) -> None:
        """Forget ended runs' records past ENDED_BYTES_MAX: an outsized one first (a large
        result), then the oldest of runs that reached a slot (their slot's execution tells
        them), and only then the oldest of runs that ended without one (cancelled or expired
        while waiting: nothing else tells them; chaos seed 61819 read 111 of them 404 when
        the oldest went first); never one a waiting replacement still looks at (see
        :meth:`_ready`)."""
        if not self.budgeted:
            return
        while self._ended_bytes > ENDED_BYTES_MAX:
            forgettable = [run_id for run_id in self._ended if self._forgettable(run_id)]
            if not forgettable:
                return
            outsized = [run_id for run_id in forgettable if self._ended[run_id] > OUTSIZED]
            slotted = [run_id for run_id in forgettable if self._entries[run_id].granted_at]
            self._forget((outsized or slotted or forgettable)[0])

    def _forgettable(self, run_id: str) -> bool:
        replacement = self._entries.get(self._entries[run_id].replaced_by or "")
        return replacement is None or replacement.phase != RunPhase.QUEUED

    # --- reads ----------------------------------------------------------------------------------

    def _position(self, entry: Entry, now: datetime | None = None) -> int | None:
        if entry.phase != RunPhase.QUEUED:
            return None
        return self._place(entry.run_id, self._moment(now)) + 1

    def _moment(self, now: datetime | None) -> datetime:
        moment = now or self._now
        if moment is None:  # a book never told the time: its queue's first run's
            return min((entry.accepted_at for entry in self._entries.values()), default=_EPOCH)
        return moment

    def _wait(self, entry: Entry, now: datetime) -> dict[str, Any]:
        """Why a waiting run waits: who holds the slots, who is served before it, and about
        how long until its turn."""
        if entry.phase != RunPhase.QUEUED:
            return {}
        ahead, eta = self._waits(now)[entry.run_id]
        return {
            "queue_expires_at": _queue_deadline(entry),
            "slot_holders": [hold.run_id for _, hold in sorted(self._slots.items()) if hold.run_id],
            "ahead": list(ahead),
            "eta_seconds": eta,
            "scope_paused": self.limits.paused,
        }

    def _waits(self, now: datetime) -> dict[str, tuple[tuple[int, ...], float | None]]:
        """Every waiting run's ``ahead`` counts and ``eta_seconds``, in one pass over the
        service order (a page of a long queue asked each run's in a pass of its own: quadratic),
        kept until the book or the time changes."""
        order = self._order(now)
        assert self._order_cache is not None
        slots = tuple((slot, hold.run_id, hold.free_at, hold.foreign) for slot, hold in
                      sorted(self._slots.items()))  # fmt: skip
        cache_key = (
            self._order_cache[0],
            slots,
            self._closes,
            self.limits.slots,
            self.limits.paused,
        )
        if self._waits_cache is not None and self._waits_cache[0] == cache_key:
            return self._waits_cache[1]
        medians = {kind: sorted(times)[len(times) // 2] for kind, times in
                   self._durations.items() if times}  # fmt: skip
        frees = self._frees(now, medians)
        ahead = [0] * PRIORITY_LAST
        table: dict[str, tuple[tuple[int, ...], float | None]] = {}
        for run_id in order:
            entry = self._entries[run_id]
            eta = None if frees is None or self.limits.paused else round(frees[0], 1)
            table[run_id] = (tuple(ahead), eta)
            ahead[max(PRIORITY_FIRST, self._rank(entry, now)) - 1] += 1
            typical = medians.get(entry.request.agent_type)
            if frees is not None and typical is not None:
                heapq.heapreplace(frees, frees[0] + typical)
            else:
                frees = None  # a duration not known: no eta behind it
        self._waits_cache = (cache_key, table)
        return table

    def _frees(self, now: datetime, medians: dict[str, float]) -> list[float] | None:
        """When each of the N slots frees, as a heap of seconds from now: each busy slot when
        its run has worked its agent type's median (each run ahead then takes the slot that
        frees first for its own median). None when a duration is not known."""
        frees: list[float] = []
        for hold in self._slots.values():
            if hold.run_id is not None:
                holder = self._entries[hold.run_id]
                typical = medians.get(holder.request.agent_type)
                if typical is None or holder.granted_at is None:
                    return None
                frees.append(max(0.0, typical - (now - holder.granted_at).total_seconds()))
            elif hold.free_at is not None:
                frees.append(max(0.0, (hold.free_at - now).total_seconds()))
            else:
                return None  # a foreign execution: nobody knows when it closes
        frees.sort()
        # Over N (N was lowered): the first frees only bring the busy slots down to N.
        frees = frees[max(0, len(frees) - self.limits.slots) :]
        frees += [0.0] * (self.limits.slots - len(frees))
        heapq.heapify(frees)
        return frees

    def record(self, run_id: str, now: datetime | None = None) -> RunRecord | None:
        entry = self._entries.get(run_id)
        if entry is None:
            return None
        moment = self._moment(now)
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
            queue_position=self._position(entry, moment),
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
            priority=entry.priority,
            fairness_key=entry.fairness_key,
            replaced_by=entry.replaced_by,
            **self._wait(entry, moment),
        )

    def view(self, offset: int, limit: int, now: datetime | None = None) -> ScopeView:
        """The slots, and a page of the waiting runs in the order they are to be served."""
        moment = self._moment(now)
        shown = max(self.limits.slots, max(self._slots, default=-1) + 1)
        slots = [self._slot_view(slot) for slot in range(shown)]
        page = self._order(moment)[max(0, offset) : max(0, offset) + max(0, limit)]
        queued = [record for run_id in page if (record := self.record(run_id, moment))]
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
        times += [
            deadline
            for run_id in self._queue
            if (deadline := _queue_deadline(self._entries[run_id]))
        ]
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
                self._forget(entry.run_id)
        for key, record in list(self._keys.items()):
            if record.at + RETENTION <= now:
                self._drop_key(key)
        for request_id, answered in list(self._answers.items()):
            if answered.at + ANSWER_RETENTION <= now:
                self._drop_answer(request_id)
        self.grant_waiting(now)

    def idle(self) -> bool:
        """Nothing waits and no slot is busy."""
        return not self._queue and not self._slots

    def empty(self) -> bool:
        """Idle, and nothing kept for repeats or reads: the coordinator may close."""
        return self.idle() and not self._entries and not self._keys and not self._answers


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _queue_deadline(entry: Entry) -> datetime | None:
    """When a waiting run leaves the queue unstarted (its queue_timeout_seconds)."""
    timeout = entry.policy.queue_timeout_seconds
    if timeout is None or entry.phase != RunPhase.QUEUED or entry.queued_at is None:
        return None
    return entry.queued_at + timedelta(seconds=timeout)


def _canonical(params: dict[str, Any] | None) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)


def _expiry(entry: Entry) -> datetime | None:
    if entry.ended_at is None:
        return None
    kept = SLOT_RECORD_RETENTION if entry.granted_at is not None else RETENTION
    return entry.ended_at + kept


def _pass_key(key: str, rank: int) -> str:
    """Where a key's pass at a priority is kept, since rank clocks (a fairness key has no
    space)."""
    return f"{rank} {key}"


def _trim(table: dict[str, Any], kept: int) -> None:
    """Drop the oldest (first inserted) items beyond ``kept``."""
    while len(table) > kept:
        del table[next(iter(table))]


# A run id's room in an entry weighed before its id is minted (ids are about 40 characters).
RUN_ID_BYTES = 100
# An ended run's record this heavy is forgotten before older ones.
OUTSIZED = ENDED_BYTES_MAX // 4


def _weight(item: Any) -> int:
    """What a dataclass weighs in the carried state: the bytes of its JSON (about; the payload
    converter's own JSON differs in spacing only)."""
    return len(json.dumps(asdict(item), separators=(",", ":"), default=str))


def _key_weight(made: KeyRecord) -> int:
    """A key record's weight: its strings and about 100 bytes of names and time."""
    return 100 + len(made.key) + len(made.run_id) + len(made.fingerprint or "")


def _answer_weight(answered: Answered) -> int:
    """An answer's weight: its strings and about 260 bytes of names, times and flags."""
    answer = answered.answer
    texts = (answer.run_id, answer.holder_run_id, answer.reason, answer.replaced_run_id)
    return 260 + 2 * len(answered.request_id) + sum(len(text or "") for text in texts)


def _size(request: RunRequest) -> int:
    """About what the request weighs in the carried state (bytes of JSON)."""
    return 300 + len(json.dumps(request.params, separators=(",", ":"), default=str))


def _microseconds(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)
