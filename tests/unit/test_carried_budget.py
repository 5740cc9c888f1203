"""What a coordinator carries across continue-as-new stays under Temporal's 2 MB input limit
(workflows/scope_book.py, the byte budget), weighed by the payload converter the SDK uses.

Before the budget, a busy scope with 1,000 ended records and 1,000 waiting runs carried about
2.4 MB: its continue-as-new would have failed."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.converter import DataConverter

from agent_runner.contract import (
    Admission,
    AdmitRequest,
    OnBusy,
    RunOutcome,
    RunPhase,
    RunPolicy,
    RunRequest,
    RunState,
    ScopeLimits,
)
from agent_runner.ids import Scope
from workflows.scope_book import ENDED_BYTES_MAX, ScopeBook, ScopeState

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
USER = "9b64a3a7-f8e4-4f06-8e57-73b50b042f29"
LIMIT = 2 * 1024 * 1024
_ids = itertools.count()


def _mint() -> str:
    return f"{next(_ids):08d}-0000-4000-8000-000000000000"


def _carried_bytes(book: ScopeBook) -> int:
    converter = DataConverter.default.payload_converter
    return converter.to_payloads([book.carried()])[0].ByteSize()


def _admit(
    book: ScopeBook,
    now: datetime,
    *,
    key: str | None = None,
    params: dict[str, Any] | None = None,
    agent_type: str = "document-extractor",
    fairness_key: str | None = None,
    on_busy: OnBusy = OnBusy.ENQUEUE,
) -> Admission:
    request = AdmitRequest(
        f"request:{next(_ids)}",
        RunRequest(agent_type, USER, params or {"document_id": "doc-123456"}, RunPolicy()),
        on_busy=on_busy,
        idempotency_key=key,
        fingerprint="f" * 64 if key else None,
        fairness_key=fairness_key,
    )
    return book.admit(request, now, _mint).admission


def _finish_started(book: ScopeBook, now: datetime, result: object) -> None:
    for grant in book.to_start():
        book.started(grant.run_id, f"temporal-{grant.run_id}")
        book.closed(grant.run_id, RunOutcome(RunState.DONE, result), clean=True, now=now)


def _busy_scope(*, budgeted: bool) -> ScopeBook:
    """1,200 runs ended with a result (each with a key), then 1,000 waiting."""
    book = ScopeBook(
        Scope("agent-runner"),
        ScopeState(ScopeLimits(slots=1, queue_max=1000)),
        RunPolicy(),
        budgeted=budgeted,
    )
    now = T0
    for index in range(1200):
        now += timedelta(seconds=0.1)
        _admit(book, now, key=f"client-{index}")
        _finish_started(book, now, {"pages": 3, "fields": {"name": "x" * 40}})
    while _admit(book, now) != Admission.FULL:
        pass
    return book


def test_a_busy_scope_carries_less_than_two_megabytes() -> None:
    assert _carried_bytes(_busy_scope(budgeted=False)) > LIMIT  # as it was before the budget
    book = _busy_scope(budgeted=True)
    assert _carried_bytes(book) < LIMIT
    assert book.queue_length >= 900  # the default queue_max still fits, about


def test_the_worst_case_carried_state_stays_under_two_megabytes() -> None:
    """Every part at its largest at once: 100 slots, weights for 1,000 keys of 128
    characters, 1,000 fairness keys' passes, 100 agent types' durations, runs with large
    params and long keys, ended runs with large results, and many answers."""
    long = "k" * 120
    weights = {f"{long}{index:08d}": 1000 for index in range(1000)}
    book = ScopeBook(
        Scope("agent-runner"),
        ScopeState(ScopeLimits(slots=100, queue_max=100_000, fair_shares=True, weights=weights)),
        RunPolicy(),
    )
    now = T0
    for index in range(1500):  # passes for 1,000+ keys, durations for 100 agent types
        now += timedelta(seconds=0.01)
        agent_type = f"a{index % 100:02d}" + "x" * 60
        _admit(book, now, agent_type=agent_type, fairness_key=f"{long}{index:08d}")
        _finish_started(book, now, {"text": "r" * 20_000})
    for index in range(3000):  # keys and answers, each at its longest
        _admit(book, now, key=f"{long}{index:08d}", on_busy=OnBusy.REJECT)
        _admit(book, now, on_busy=OnBusy.REJECT)
        _finish_started(book, now, {"text": "r" * 2000})
    params = {"blob": "p" * 5000}
    for index in range(100):  # every slot working on large params
        _admit(book, now, params=params, fairness_key=f"{long}{index:08d}")
    while _admit(book, now, params=params, key=f"q{next(_ids)}{long}") != Admission.FULL:
        pass
    assert book.busy_slots() == 100
    assert _carried_bytes(book) < LIMIT


def test_an_outsized_result_is_forgotten_before_older_records() -> None:
    book = ScopeBook(Scope("agent-runner"), ScopeState(ScopeLimits(slots=1)), RunPolicy())
    now = T0
    _admit(book, now)
    (small,) = [grant.run_id for grant in book.to_start()]
    _finish_started(book, now, {"ok": True})
    for _ in range(2):
        now += timedelta(seconds=1)
        _admit(book, now)
        _finish_started(book, now, {"text": "r" * (ENDED_BYTES_MAX // 2)})
    record = book.record(small)
    assert record is not None  # the small, older one is kept
    assert record.outcome is not None


def test_a_replaced_runs_record_is_kept_while_its_replacement_waits() -> None:
    """The replacement is granted only once the run it replaced left its slot, which it reads
    from that run's record: forgetting it would let the two agents overlap."""
    book = ScopeBook(Scope("agent-runner"), ScopeState(ScopeLimits(slots=1)), RunPolicy())
    now = T0
    _admit(book, now)
    (victim,) = [grant.run_id for grant in book.to_start()]
    book.started(victim, "temporal-victim")
    assert _admit(book, now, on_busy=OnBusy.REPLACE) == Admission.QUEUED
    # The replaced run is terminated from outside: its slot drains for a lease.
    book.closed(victim, RunOutcome(RunState.ERROR, {"text": "r" * ENDED_BYTES_MAX}), clean=False,
                now=now)  # fmt: skip
    entry = book.entry(victim)
    assert entry is not None
    assert entry.phase == RunPhase.ENDED
    assert book.to_start() == []  # still draining: the replacement waits


def test_runs_that_ended_without_a_slot_are_forgotten_last() -> None:
    """Failed before (chaos seed 61819: 111 runs read 404): the oldest records went first,
    and a run cancelled or expired while it waited is told by nothing else; a run that
    reached a slot is told by its slot's execution."""
    book = ScopeBook(Scope("agent-runner"), ScopeState(ScopeLimits(slots=1)), RunPolicy())
    now = T0
    _admit(book, now)
    (holder,) = [grant.run_id for grant in book.to_start()]
    book.started(holder, "temporal-holder")
    waiting = [book.admit(AdmitRequest(f"request:{next(_ids)}", RunRequest("document-extractor",
               USER, {"n": index}, RunPolicy()), on_busy=OnBusy.ENQUEUE), now, _mint).run_id
               for index in range(20)]  # fmt: skip
    for run_id in waiting:
        assert run_id is not None
        book.cancel(run_id, now)
    book.closed(holder, RunOutcome(RunState.DONE, "approved"), clean=True, now=now)
    for _ in range(400):  # runs that reach a slot, ending with results, long after
        now += timedelta(seconds=1)
        _admit(book, now)
        _finish_started(book, now, {"text": "r" * 500})
    assert all(book.record(str(run_id)) is not None for run_id in waiting)
    assert book.record(holder) is None  # the oldest that reached a slot went first
