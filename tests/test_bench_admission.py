"""bench/admission.py's pure parts: the largest queue a scope may hold, and the verdict's rows
from results (the stack run itself is `make bench-admission`)."""

from __future__ import annotations

import uuid
from typing import Any

from agent_runner.contract import RunRequest
from bench.admission import SLEEPER, carried_when_full, largest_queue, parse_args, verdict
from workflows.scope_book import OPEN_BYTES_MAX


def test_the_largest_queue_is_queue_max_until_the_runs_weigh_the_byte_budget() -> None:
    assert largest_queue(1000, 700) == 1000
    assert largest_queue(100_000, 700) == OPEN_BYTES_MAX // 700 - 1
    assert largest_queue(1000, 65_836) == OPEN_BYTES_MAX // 65_836 - 1


def test_the_carried_state_of_a_full_queue_holds_every_queued_run() -> None:
    request = RunRequest(SLEEPER, str(uuid.uuid4()), params={"seconds": 3600.0})

    small, larger = carried_when_full(5, request), carried_when_full(10, request)

    assert (small["queued"], larger["queued"]) == (5, 10)
    assert 0 < small["bytes"] < larger["bytes"]


def _results(**more: Any) -> dict[str, Any]:
    phase = {"p50_ms": 10.0, "p95_ms": 20.0, "p99_ms": 30.0, "n": 100, "refused_503": 1}
    coordinator = {"history_length": 80, "largest_event_bytes": 4000}
    return {
        "holders": dict(phase),
        "enqueue": phase | {"p99_ms": 60.0},
        "reject": dict(phase),
        "reads": {
            "ours_queued": {"reads_per_s": 90.0, "p99_ms": 12.0, "n": 900},
            "inmemory_running": {"reads_per_s": 100.0, "p99_ms": 6.0, "n": 1000},
        },
        "bounds": {
            "queue_max": 1000,
            "queue_bytes_max": OPEN_BYTES_MAX,
            "request_bytes": 318,
            "largest_queue": 1000,
            "past_it": '409 "The queue is full, please retry later" with Retry-After',
            "temporal_payload_max": 2 * 1024 * 1024,
            "temporal_events_max": 51_200,
            "coordinators": [coordinator],
        },
        "error_count": 0,
    } | more


def test_the_verdict_reports_each_goal_against_its_baseline() -> None:
    rows = {row["benchmark"]: row for row in verdict(_results())}

    enqueue = rows["enqueue answer p99 (vs reject answer p99)"]
    assert (enqueue["ratio"], enqueue["met"]) == (2.0, False)
    reads = rows["status of a queued run, reads/s (vs the in-memory seed's status read)"]
    assert (reads["ratio"], reads["met"]) == (0.9, True)
    assert rows["503s sent again after Retry-After (all starts)"]["ours"] == "3"
    assert rows["errors of ours (5xx, no answer, runs lost, a reject started)"]["met"] is True


def test_an_error_of_ours_fails_its_row() -> None:
    rows = {row["benchmark"]: row for row in verdict(_results(error_count=2))}

    assert rows["errors of ours (5xx, no answer, runs lost, a reject started)"]["met"] is False


def test_the_defaults_are_the_issues_sizes() -> None:
    args = parse_args([])

    assert (args.scopes, args.per_scope, args.reads) == (1000, 10, 20.0)
