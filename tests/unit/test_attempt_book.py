"""The attempts of one run (workflows/attempt_book.py): which dispatch may start when, and
whose word ends an attempt."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import pytest
from temporalio.exceptions import ActivityError, TimeoutError, TimeoutType

from agent_runner.contract import AttemptClaim
from agent_runner.lease import commitment
from workflows.attempt_book import (
    AttemptBook,
    AttemptEnd,
    AttemptRefusedError,
    EndKind,
    attempt_end,
)

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LEASE = 9.0


def claim(book: AttemptBook, attempt: int = 1, now: datetime = T0) -> tuple[str, float, int]:
    key = secrets.token_hex(32)
    go = book.claim(AttemptClaim(attempt, commitment(key)), now)
    return key, go.wait_seconds, go.fencing_token


def test_the_first_dispatch_starts_at_once_and_its_key_proves_it_stopped():
    book = AttemptBook(fence_base=1000, lease_seconds=LEASE)
    book.begin(1)
    key, wait, token = claim(book)
    assert (wait, token) == (0.0, 1001)
    assert book.finish(1, key, T0) is True
    assert book.wait_seconds(T0) == 0.0


def test_an_end_without_the_key_holds_the_run_back_one_lease():
    """A forged `temporal activity complete` (no key): the dispatch may still work."""
    book = AttemptBook(fence_base=0, lease_seconds=LEASE)
    book.begin(1)
    claim(book)
    assert book.finish(1, "", T0) is False
    assert book.wait_seconds(T0) == LEASE
    assert book.wait_seconds(T0 + timedelta(seconds=LEASE)) == 0.0


def test_a_second_dispatch_of_one_attempt_waits_a_lease_and_gets_a_higher_token():
    """A reset of the activity (or a forged claim) while the first dispatch may work."""
    book = AttemptBook(fence_base=0, lease_seconds=LEASE)
    book.begin(1)
    _, _, first = claim(book)
    _, wait, second = claim(book)
    assert wait == LEASE
    assert second > first


def test_claims_for_another_attempt_or_after_its_end_are_refused():
    book = AttemptBook(fence_base=0, lease_seconds=LEASE)
    book.begin(2)
    with pytest.raises(AttemptRefusedError):
        claim(book, attempt=1)
    key, _, _ = claim(book, attempt=2)
    book.finish(2, key, T0)
    with pytest.raises(AttemptRefusedError):
        claim(book, attempt=2)


def test_a_report_needs_the_key_of_one_of_its_claims():
    book = AttemptBook(fence_base=0, lease_seconds=LEASE)
    book.begin(1)
    key, _, _ = claim(book)
    with pytest.raises(AttemptRefusedError):
        book.check_report(1, secrets.token_hex(32))
    book.check_report(1, key)


def test_a_dispatch_that_went_silent_before_claiming_was_lost_and_one_that_claimed_was_not():
    """A paused worker's open polls took attempts 2 and 3 of a run after attempt 1's worker was
    paused: both timed out on their heartbeat before their agent could start, and the run ended
    ERROR without another agent ever working (tests/test_guarantees.py, CI). Such a dispatch is
    lost, and is sent again without using up an attempt; one that claimed is a real attempt."""
    silent = AttemptEnd(EndKind.FAILED, "heartbeat", timeout=TimeoutType.HEARTBEAT)
    book = AttemptBook(fence_base=0, lease_seconds=LEASE)
    book.begin(2)
    assert book.lost(2, silent)
    assert not book.lost(
        2, AttemptEnd(EndKind.FAILED, "no worker", timeout=TimeoutType.SCHEDULE_TO_START)
    )
    assert not book.lost(2, AttemptEnd(EndKind.FAILED, "the agent raised"))
    claim(book, attempt=2)
    assert not book.lost(2, silent)


def test_a_heartbeat_timeout_is_read_as_such_from_the_activitys_failure():
    error = ActivityError(
        "activity timed out",
        scheduled_event_id=5,
        started_event_id=6,
        identity="worker",
        activity_type="run_agent",
        activity_id="attempt-2",
        retry_state=None,
    )
    error.__cause__ = TimeoutError(
        "heartbeat", type=TimeoutType.HEARTBEAT, last_heartbeat_details=[]
    )
    assert attempt_end(error).timeout == TimeoutType.HEARTBEAT
