"""The decisions of one scope (workflows/scope_book.py), as pure code: every rule the
coordinator keeps, checked without Temporal, then against random schedules of starts, cancels,
closes, limit changes and time."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from agent_runner.contract import (
    Admission,
    AdmitRequest,
    CancelEffect,
    OnBusy,
    RunOutcome,
    RunPhase,
    RunPolicy,
    RunRequest,
    RunState,
    ScopeLimits,
)
from agent_runner.ids import Scope, ScopeKind
from agent_runner.lease import lease_seconds
from workflows.scope_book import ScopeBook, ScopeState

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
USER = "9b64a3a7-f8e4-4f06-8e57-73b50b042f29"
POLICY = RunPolicy(heartbeat_timeout_seconds=10.0)


def book(slots: int = 1, queue_max: int = 100) -> ScopeBook:
    return ScopeBook(Scope("agent-runner"), ScopeState(ScopeLimits(slots, queue_max)), POLICY)


_ids = itertools.count()


def mint() -> str:
    return f"00000000-0000-4000-8000-{next(_ids):012d}"


def request(
    on_busy: OnBusy = OnBusy.REJECT, key: str | None = None, fingerprint: str = "f"
) -> AdmitRequest:
    return AdmitRequest(
        request_id=f"request:{next(_ids)}" if key is None else f"key:{key}",
        run=RunRequest("policy-checker", USER),
        on_busy=on_busy,
        idempotency_key=key,
        fingerprint=fingerprint if key else None,
    )


def start(scope: ScopeBook, now: datetime = T0) -> str:
    """Grant the run and play its workflow's start."""
    answer = scope.admit(request(), now, mint)
    assert answer.admission == Admission.STARTED, answer
    assert answer.run_id is not None
    scope.started(answer.run_id, f"temporal-{answer.run_id}")
    return answer.run_id


def done(scope: ScopeBook, run_id: str, now: datetime = T0, *, clean: bool = True) -> None:
    scope.closed(run_id, RunOutcome(RunState.DONE, "approved", 1), clean=clean, now=now)


def test_a_free_slot_is_granted_and_a_busy_scope_refuses():
    scope = book()
    first = start(scope)
    busy = scope.admit(request(), T0, mint)
    assert busy.admission == Admission.BUSY
    assert busy.holder_run_id == first
    assert busy.holder_granted_at == T0


def test_an_enqueued_run_waits_then_takes_the_slot_its_predecessor_left():
    scope = book()
    first = start(scope)
    queued = scope.admit(request(OnBusy.ENQUEUE), T0, mint)
    assert (queued.admission, queued.queue_position) == (Admission.QUEUED, 1)
    assert scope.to_start() == []
    done(scope, first)
    [grant] = scope.to_start()
    assert (grant.run_id, grant.slot) == (queued.run_id, 0)
    assert grant.fence_base > scope.entry(first).fence_base


def test_a_start_that_will_not_wait_never_passes_a_waiting_run():
    """Finding 5 of the exactly-once issue: a reject start took a slot while a run waited."""
    scope = book(slots=2)
    start(scope)
    start(scope)
    waiting = scope.admit(request(OnBusy.ENQUEUE), T0, mint)
    assert waiting.admission == Admission.QUEUED
    assert scope.admit(request(), T0, mint).admission == Admission.BUSY


def test_a_slot_closed_from_outside_drains_for_its_runs_lease_and_nobody_takes_it_meanwhile():
    scope = book(slots=2)
    first = start(scope)
    second = start(scope)
    waiting = scope.admit(request(OnBusy.ENQUEUE), T0, mint)
    done(scope, first, clean=False)  # terminated: its agent may work one lease more
    assert scope.to_start() == []
    assert scope.admit(request(), T0, mint).admission == Admission.BUSY
    drained = T0 + timedelta(seconds=lease_seconds(10.0))
    assert scope.next_wakeup() == drained
    scope.grant_waiting(drained - timedelta(milliseconds=1))
    assert scope.to_start() == []
    # Finding 5: the later run must not get the other slot first because it drained sooner.
    done(scope, second)
    [grant] = scope.to_start()
    assert (grant.run_id, grant.slot) == (waiting.run_id, 1)


def test_a_queued_run_cancelled_ends_at_once_and_the_next_moves_up():
    scope = book()
    start(scope)
    first = scope.admit(request(OnBusy.ENQUEUE), T0, mint)
    second = scope.admit(request(OnBusy.ENQUEUE), T0, mint)
    answer, stop = scope.cancel(str(first.run_id), T0)
    assert (answer.effect, stop) == (CancelEffect.REMOVED, False)
    assert answer.record is not None
    assert answer.record.outcome is not None
    assert answer.record.outcome.error == "cancelled"
    assert scope.record(str(second.run_id)).queue_position == 1
    again, _ = scope.cancel(str(first.run_id), T0)
    assert again.effect == CancelEffect.ENDED


def test_a_running_run_cancelled_is_stopped_by_its_workflow_and_only_once():
    scope = book()
    run = start(scope)
    answer, stop = scope.cancel(run, T0)
    assert (answer.effect, stop) == (CancelEffect.STOPPING, True)
    again, stop = scope.cancel(run, T0)
    assert (again.effect, stop) == (CancelEffect.ALREADY_STOPPING, False)


def test_a_cancel_while_its_workflow_starts_is_passed_on_once_it_started():
    scope = book()
    answer = scope.admit(request(), T0, mint)
    run = str(answer.run_id)
    cancel, stop = scope.cancel(run, T0)
    assert (cancel.effect, stop) == (CancelEffect.STOPPING, False)
    assert scope.started(run, "temporal-1") is True


def test_a_key_gets_its_run_whatever_became_of_it():
    """Finding 2: a keyed run cancelled while it waited gave a second run to its key."""
    scope = book()
    start(scope)
    first = scope.admit(request(OnBusy.ENQUEUE, key="k1"), T0, mint)
    scope.cancel(str(first.run_id), T0)
    again = scope.admit(request(OnBusy.ENQUEUE, key="k1"), T0, mint)
    assert (again.run_id, again.replayed, again.admission) == (first.run_id, True, Admission.QUEUED)
    assert again.queue_position is None
    reused = scope.admit(request(OnBusy.ENQUEUE, key="k1", fingerprint="other"), T0, mint)
    assert reused.admission == Admission.KEY_REUSED


def test_a_repeated_request_gets_its_first_answer_and_no_second_run():
    scope = book()
    first = request(OnBusy.ENQUEUE)
    answers = [scope.admit(first, T0, mint) for _ in range(3)]
    assert {answer.run_id for answer in answers} == {answers[0].run_id}
    assert scope.busy_slots() == 1
    assert scope.queue_length == 0


def test_a_request_that_arrives_after_its_caller_gave_up_is_not_started():
    scope = book()
    late = AdmitRequest("request:late", RunRequest("policy-checker", USER), not_after=T0)
    assert scope.admit(late, T0 + timedelta(seconds=1), mint).admission == Admission.EXPIRED
    assert scope.busy_slots() == 0


def test_a_full_queue_refuses():
    scope = book(queue_max=2)
    start(scope)
    for _ in range(2):
        assert scope.admit(request(OnBusy.ENQUEUE), T0, mint).admission == Admission.QUEUED
    assert scope.admit(request(OnBusy.ENQUEUE), T0, mint).admission == Admission.FULL


def test_a_bad_request_is_refused_with_its_reason():
    scope = book()
    bad = AdmitRequest("request:bad", RunRequest("policy-checker", "not-a-uuid"))
    answer = scope.admit(bad, T0, mint)
    assert answer.admission == Admission.INVALID
    assert "user_id" in str(answer.reason)


def test_a_foreign_holder_sends_the_run_back_to_the_head_of_the_queue():
    scope = book()
    waiting = scope.admit(request(OnBusy.ENQUEUE), T0, mint)
    scope.refused(str(waiting.run_id), None, T0)
    assert scope.record(str(waiting.run_id)).phase == RunPhase.QUEUED
    later = scope.admit(request(OnBusy.ENQUEUE), T0, mint)
    scope.foreign_closed(0, clean=True, lease=0.0, now=T0)
    [grant] = scope.to_start()
    assert grant.run_id == waiting.run_id
    assert scope.record(str(later.run_id)).queue_position == 1


def test_lowering_n_lets_running_agents_finish_and_never_admits_more_than_the_new_n():
    scope = book(slots=3)
    runs = [start(scope) for _ in range(3)]
    scope.limits = ScopeLimits(slots=1)
    queued = scope.admit(request(OnBusy.ENQUEUE), T0, mint)
    done(scope, runs[0])
    assert scope.to_start() == []  # two still work, N is 1
    done(scope, runs[1])
    assert scope.to_start() == []
    done(scope, runs[2])
    [grant] = scope.to_start()
    assert grant.run_id == queued.run_id


def test_records_and_keys_are_forgotten_after_their_retention():
    scope = book()
    run = start(scope)
    done(scope, run)
    scope.expire(T0 + timedelta(hours=1))
    assert scope.record(run) is None
    assert scope.empty()


def test_the_carried_state_makes_the_same_book():
    scope = book(slots=2)
    start(scope)
    scope.admit(request(OnBusy.ENQUEUE, key="k"), T0, mint)
    scope.admit(request(OnBusy.ENQUEUE), T0, mint)
    again = ScopeBook(scope.scope, scope.carried(), POLICY)
    assert again.carried() == scope.carried()
    assert again.view(0, 10) == scope.view(0, 10)


# --- random schedules ------------------------------------------------------------------------

Step = tuple[str, int]
steps = st.lists(
    st.tuples(
        st.sampled_from(
            ["reject", "enqueue", "keyed", "cancel", "close", "terminate", "time", "limit"]
        ),
        st.integers(min_value=0, max_value=9),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_random_schedules_keep_the_bound_the_order_and_the_keys(schedule: list[Step]) -> None:
    scope = book(slots=2)
    now = T0
    accepted: list[str] = []  # in the order the scope accepted them
    granted: list[str] = []
    keys: dict[str, str] = {}
    for kind, number in schedule:
        if kind in ("reject", "enqueue", "keyed"):
            key = f"k{number}" if kind == "keyed" else None
            on_busy = OnBusy.REJECT if kind == "reject" else OnBusy.ENQUEUE
            answer = scope.admit(request(on_busy, key=key), now, mint)
            if answer.run_id and not answer.replayed:
                accepted.append(answer.run_id)
            if key is not None and answer.run_id:
                assert keys.setdefault(key, answer.run_id) == answer.run_id
            if kind == "reject":
                assert answer.admission in (Admission.STARTED, Admission.BUSY)
        elif kind == "cancel" and accepted:
            scope.cancel(accepted[number % len(accepted)], now)
        elif kind in ("close", "terminate"):
            held = scope.held()
            if held:
                _, run_id, _ = held[number % len(held)]
                done(scope, run_id, now, clean=kind == "close")
        elif kind == "time":
            now += timedelta(seconds=number * 2)
            scope.expire(now)
        elif kind == "limit":
            scope.limits = ScopeLimits(slots=1 + number % 3)
            scope.grant_waiting(now)
        for grant in scope.to_start():
            granted.append(grant.run_id)
            scope.started(grant.run_id, f"temporal-{grant.run_id}")
        assert scope.busy_slots() <= 3, "never more slots busy than the largest N"
    # Runs were granted in the order they were accepted (a run granted at once included).
    order = {run_id: index for index, run_id in enumerate(accepted)}
    assert [order[run] for run in granted] == sorted(order[run] for run in granted)


def test_a_successor_squares_what_it_took_over_with_the_slots():
    """A coordinator ended from outside: its successor takes over what it carried, then asks
    the server what holds each slot."""
    from agent_runner.contract import SlotFinding, SlotState

    scope = book(slots=2)
    running = start(scope)
    starting = scope.admit(request(), T0, mint).run_id
    waiting = scope.admit(request(OnBusy.ENQUEUE), T0, mint).run_id
    taken_over = ScopeBook(scope.scope, scope.carried(), POLICY)

    taken_over.survey(
        [
            SlotFinding(0, SlotState.FOREIGN, f"temporal-{running}", holder_run_id=running),
            SlotFinding(1, SlotState.FREE),
        ],
        T0,
    )

    assert taken_over.held()[0] == (0, running, f"temporal-{running}")
    # The start that never happened went back to the head of the queue, and so gets the slot
    # that is free again before the run that waited behind it.
    [grant] = taken_over.to_start()
    assert (grant.run_id, grant.slot) == (starting, 1)
    assert taken_over.record(str(waiting)).queue_position == 1


def test_a_run_of_another_scope_is_refused_and_takes_no_slot():
    """Found by the randomized run: one user's run admitted by another user's coordinator
    worked on that user's slot, beside its own user's N."""
    mine = ScopeBook(Scope("base", ScopeKind.USER_ID, USER), ScopeState(), RunPolicy())
    other = "0f0f0f0f-0000-4000-8000-0000000f0f0f"
    stray = AdmitRequest("request:stray", RunRequest("policy-checker", other))
    answer = mine.admit(stray, T0, mint)
    assert answer.admission == Admission.INVALID
    assert answer.reason == f"this run belongs to scope {other}, not {USER}"
    assert mine.admit(request(), T0, mint).admission == Admission.STARTED


def test_a_run_a_coordinator_started_itself_takes_its_slot_from_one_that_never_started():
    """Taking over from a coordinator that can no longer be asked (activities/scope_ops.py):
    its history says it started a queued run on slot 0; the run its book had on that slot but
    never started waits first in line again, and the run's end gives no slot and ends no
    waiting run (the successor does, with the limits it reads)."""
    scope = book(slots=1)
    never = scope.admit(request(), T0, mint)
    waiting = scope.admit(request(OnBusy.ENQUEUE), T0, mint)
    assert (never.admission, waiting.admission) == (Admission.STARTED, Admission.QUEUED)
    assert never.run_id is not None
    assert waiting.run_id is not None
    later = T0 + timedelta(seconds=5)
    assert scope.took_slot(waiting.run_id, 0, 77, "execution-w", later)
    assert scope.held() == [(0, waiting.run_id, "execution-w")]
    took = scope.entry(waiting.run_id)
    assert took is not None
    assert (took.fence_base, took.granted_at) == (77, later)
    requeued = scope.entry(never.run_id)
    assert requeued is not None
    assert requeued.phase == RunPhase.QUEUED
    outcome = RunOutcome(RunState.DONE, "approved", 1)
    scope.closed_before(waiting.run_id, outcome, clean=True, now=later + timedelta(hours=1))
    assert scope.held() == []
    assert requeued.phase == RunPhase.QUEUED  # no slot given, though one is free
    assert not scope.took_slot(waiting.run_id, 0, 78, "again", later)  # it has ended
