"""The lease in numbers, and the stop key (agent_runner/lease.py): pure functions the worker
and the workflows share."""

from __future__ import annotations

import secrets

import pytest

from agent_runner.lease import (
    FENCE_STRIDE,
    MIN_HEARTBEAT_TIMEOUT_SECONDS,
    commitment,
    fence_base,
    lease_seconds,
    renew_seconds,
    retry_interval_seconds,
    reveals,
    run_bound_seconds,
)


@pytest.mark.parametrize(
    ("heartbeat_timeout", "lease"), [(1.0, 0.75), (2.0, 1.5), (4.0, 3.0), (10.0, 9.0), (60.0, 59.0)]
)
def test_a_lease_stops_short_of_the_heartbeat_timeout(
    heartbeat_timeout: float, lease: float
) -> None:
    assert lease_seconds(heartbeat_timeout) == lease
    # Twice per lease: one confirmation may answer late without the lease running out.
    assert renew_seconds(heartbeat_timeout) == lease / 2


def test_the_smallest_heartbeat_timeout_still_leaves_a_lease() -> None:
    assert lease_seconds(MIN_HEARTBEAT_TIMEOUT_SECONDS) > 0


def test_only_the_attempts_own_key_reveals_its_commitment() -> None:
    key = secrets.token_hex(32)
    committed = commitment(key)
    assert reveals(key, committed)
    for forged in (secrets.token_hex(32), key.upper()[:63], None, 7, "", "zz" * 32, committed):
        assert not reveals(forged, committed)


def test_a_runs_fencing_tokens_stay_above_those_before_it_on_its_slot() -> None:
    assert fence_base(5, floor=0) == 5 * FENCE_STRIDE
    assert fence_base(5, floor=10**9) == 10**9
    assert fence_base(6, floor=0) > fence_base(5, floor=0) + FENCE_STRIDE - 1


def test_retries_double_up_to_a_hundred_times_the_first_pause() -> None:
    pauses = [retry_interval_seconds(1.0, attempt) for attempt in range(1, 10)]
    assert pauses[:4] == [1.0, 2.0, 4.0, 8.0]
    assert max(pauses) == 100.0


def test_a_runs_bound_covers_every_attempt_and_grows_with_each_of_them() -> None:
    policy = {
        "timeout_seconds": 60.0,
        "heartbeat_timeout_seconds": 10.0,
        "retry_initial_interval_seconds": 1.0,
        "worker_wait_seconds": 300.0,
    }
    one, three = (
        run_bound_seconds(max_attempts=1, **policy),
        run_bound_seconds(max_attempts=3, **policy),
    )
    assert one > 300.0 + 60.0 + 10.0
    assert three > 3 * (300.0 + 60.0 + 10.0) + 1.0 + 2.0
    assert run_bound_seconds(max_attempts=3, **(policy | {"timeout_seconds": 120.0})) > three
