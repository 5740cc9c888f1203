"""The chaos checker, on synthetic histories (no server): the clean story passes every property,
and each defect makes exactly the property it breaks fail, and no other."""

from __future__ import annotations

import pytest

from agent_runner.ids import ScopeKind
from chaos.checker import CheckerOptions, check
from chaos.history import FaultRecord, Replays
from chaos.intervals import merged, walk_back
from chaos.verdicts import Verdict
from tests.chaos_histories import T0, Story, body, clean

EXTRACTOR = "document-extractor"

PROPERTIES = ["bound", "final", "once", "fifo", "keys", "5xx", "liveness", "granted", "faults",
              "replays"]  # fmt: skip


def verdict_of(story: Story, **options: object) -> Verdict:
    return check(story.history(), story.lines, CheckerOptions(**options))  # type: ignore[arg-type]


def assert_only_fails(verdict: Verdict, name: str) -> None:
    assert verdict.failed() == [name], [(r.name, r.violations) for r in verdict.properties]


def test_a_clean_history_passes_every_property() -> None:
    verdict = verdict_of(clean())

    assert [result.name for result in verdict.properties] == PROPERTIES
    assert verdict.passed, [(r.name, r.violations) for r in verdict.properties]
    # A clean history has no faults to check; every other property looked at something.
    assert all(result.checked > 0 for result in verdict.properties if result.name != "faults")


def test_two_agents_at_once_in_one_scope_fail_the_bound() -> None:
    story = clean()
    story.agent("B", 1.8, 2.0, attempt=2, worker="worker1-1", ended_by="agent_error")

    verdict = verdict_of(story)

    assert_only_fails(verdict, "bound")
    assert "B attempt 2" in verdict["bound"].violations[0]


def test_a_history_that_does_not_replay_fails_replays() -> None:
    story = clean()
    story.replays = Replays(checked=3, failures=["chaos:user:u (r1): Nondeterminism error"])

    verdict = verdict_of(story)

    assert_only_fails(verdict, "replays")
    assert "Nondeterminism" in verdict["replays"].violations[0]


def test_a_run_from_before_replays_were_recorded_says_so() -> None:
    story = clean()
    story.replays = None

    verdict = verdict_of(story)

    assert verdict.passed
    assert verdict["replays"].checked == 0
    assert "chaos.replays" in verdict["replays"].notes[0]


def b_cut_short(story: Story, **end: object) -> None:
    """B's first attempt works on worker1 from 1.3 (how it ends: ``end``); attempt 2 completes
    on worker0 after C's agent (3.2-4.2)."""
    story.agent("B", 1.3, end.pop("at", None), worker="worker1-1", **end)  # type: ignore[arg-type]
    story.agent("B", 4.3, 5.0, attempt=2)


def killed_at(story: Story, process: str, at: float) -> None:
    story.processes = [
        life.model_copy(update={"ended": T0 + at, "ended_by": "sigkill"})
        if life.name == process
        else life
        for life in story.processes
    ]


def test_a_span_without_end_line_lasts_until_its_worker_was_killed() -> None:
    story = clean(b_agent=None)
    b_cut_short(story)
    killed_at(story, "worker1-1", 3.15)
    assert verdict_of(story).passed, "killed before C's agent began"

    killed_at(story, "worker1-1", 3.5)
    assert_only_fails(verdict_of(story), "bound")


def test_a_span_without_end_line_in_a_process_never_stopped_lasts_to_the_end() -> None:
    story = clean(b_agent=None)
    b_cut_short(story)
    story.processes = [
        life.model_copy(update={"ended": None, "ended_by": None}) for life in story.processes
    ]

    assert_only_fails(verdict_of(story), "bound")


def test_a_lost_lease_ends_its_span_at_the_lease_expiry() -> None:
    story = clean(b_agent=None)
    b_cut_short(story, at=3.6, ended_by="agent_lease_lost", lease_expired_at=T0 + 3.1)
    assert verdict_of(story).passed, "the lease ran out before C's agent began"

    story = clean(b_agent=None)
    b_cut_short(story, at=3.6, ended_by="agent_lease_lost", lease_expired_at=T0 + 3.3)
    assert_only_fails(verdict_of(story), "bound")


def test_an_agent_started_after_its_lease_expired_fails_the_bound() -> None:
    story = clean(b_agent=None)
    b_cut_short(story, at=1.31, ended_by="agent_lease_lost", lease_expired_at=T0 + 1.25)

    verdict = verdict_of(story)

    assert_only_fails(verdict, "bound")
    assert verdict["bound"].violations == [
        "B attempt 1 on worker1-1: agent_start at 08:00:01.300, after its lease had expired at "
        "08:00:01.250"
    ]


def test_a_run_whose_202_never_ends_fails_final() -> None:
    story = clean(b_agent=None)
    story.ops = [op for op in story.ops if op.request.get("run_id") != "B"]
    story.read(9.0, "B", "PENDING", queue_position=1)

    verdict = verdict_of(story)

    assert_only_fails(verdict, "final")
    assert "B" in verdict["final"].violations[0]


def test_a_run_read_done_then_pending_fails_final() -> None:
    story = clean()
    story.read(11.0, "B", "PENDING", queue_position=1)

    assert_only_fails(verdict_of(story), "final")


def test_a_final_state_read_otherwise_later_fails_final_unless_the_read_may_be_stale() -> None:
    story = clean()
    story.read(10.0, "B", "RUNNING")  # within the grace after the outage: may be stale
    story.read(30.0, "B", "DONE")
    assert verdict_of(story).passed

    story.read(20.0, "B", "RUNNING")
    story.read(31.0, "B", "DONE")
    verdict = verdict_of(story)
    assert_only_fails(verdict, "final")
    assert (
        "read DONE at 08:00:09.050, then RUNNING in a read sent at 08:00:20.000"
        in (verdict["final"].violations[0])
    )


def test_a_done_run_completed_twice_fails_once() -> None:
    story = clean()
    story.agent("A", 2.4, 2.9, attempt=2, worker="worker1-1", result="rejected", has_result=True)

    verdict = verdict_of(story)

    assert_only_fails(verdict, "once")
    assert "A is DONE with 2 agent_complete" in verdict["once"].violations[0]


def test_a_done_result_other_than_the_one_logged_fails_once() -> None:
    story = clean()
    story.ops = [
        op for op in story.ops if not (op.request.get("run_id") == "C" and op.phase == "final")
    ]
    story.read(9.0, "C", "DONE", result="rejected")

    assert_only_fails(verdict_of(story), "once")


def test_a_run_granted_while_an_earlier_one_still_waited_fails_fifo() -> None:
    story = clean(b_agent=(5.5, 6.5))
    story.read(4.5, "B", "PENDING", phase="chaos", queue_position=1)
    story.regrant("B", 5.45)  # after C (granted 3.05), which was sent after B's 202

    verdict = verdict_of(story)

    assert_only_fails(verdict, "fifo")
    assert (
        verdict["fifo"]
        .violations[0]
        .startswith("C (reject, sent 08:00:03.000) had a slot by 08:00:03.050")
    )
    assert "still waited at 08:00:05.450 (its grant)" in verdict["fifo"].violations[0]


def with_d(story: Story, granted: float) -> None:
    """D: enqueued after B's 202 (so after B in line), granted at ``granted``."""
    story.start(0.7, 0.8, "enqueue", "D", position=2)
    story.read(9.0, "D", "DONE", result=None)
    story.regrant("D", granted)


def test_runs_granted_in_one_coordinator_task_may_share_their_grant_time() -> None:
    story = clean()
    with_d(story, 1.25)  # granted with B (1.25), in one coordinator task: two slots

    assert verdict_of(story)["fifo"].passed
    assert verdict_of(story)["fifo"].checked > 0


def test_a_later_run_granted_before_an_earlier_one_fails_fifo_whatever_the_agents_did() -> None:
    story = clean()
    with_d(story, 1.0)  # before B (1.25), whose 202 came before D was asked for

    verdict = verdict_of(story)

    assert verdict["fifo"].violations == [
        "D (enqueue, sent 08:00:00.700) had a slot by 08:00:01.000 while B (enqueue, 202 at "
        "08:00:00.600, queue_position 1) still waited at 08:00:01.250 (its grant)"
    ]


def test_a_grant_known_only_from_the_execution_start_proves_no_inversion() -> None:
    story = clean()
    with_d(story, 1.3)
    story.regrant("B", 1.4, recorded=False)  # B's execution started at 1.4: granted by then

    verdict = verdict_of(story)

    assert verdict["fifo"].passed
    assert any("not proven" in note for note in verdict["fifo"].notes)
    assert (
        'grants by source: {"the coordinator\'s record": 4, "the slot execution\'s start": 1}'
        in (verdict["fifo"].notes)
    )


def test_the_old_approximation_from_agent_starts_is_still_an_option() -> None:
    story = clean(b_agent=(5.5, 6.5))  # B's agent started late; its grant (1.25) was not

    assert verdict_of(story).passed
    fallback = verdict_of(story, fifo_grants="agent_start")
    assert fallback.passed
    assert any("not proven" in note for note in fallback["fifo"].notes)
    assert verdict_of(story, fifo_grants="agent_start", fifo_tolerance_seconds=1.0).failed() == [
        "fifo"
    ]


def test_a_run_that_started_at_once_never_waited() -> None:
    story = clean(a_agent=(5.5, 6.5), b_agent=(0.7, 1.7))  # A's 202 said: started at once

    assert verdict_of(story, fifo_grants="agent_start", fifo_tolerance_seconds=0.0).passed


def test_a_status_read_in_an_outage_is_no_evidence_of_waiting() -> None:
    story = clean(b_agent=(5.5, 6.5))
    story.read(6.2, "B", "PENDING", phase="chaos", queue_position=1)

    assert verdict_of(story, fifo_grants="agent_start").passed


def test_a_reject_granted_while_an_earlier_run_waited_fails_fifo() -> None:
    story = clean(b_agent=None)
    story.ops = [op for op in story.ops if op.request.get("run_id") != "B"]
    story.regrant("B", None)
    story.read(9.0, "B", "ERROR", error="cancelled")
    story.op("cancel", 3.5, 3.6, {"run_id": "B"}, 200, {"state": "ERROR"})

    verdict = verdict_of(story)

    assert_only_fails(verdict, "fifo")
    assert verdict["fifo"].violations[0].startswith("C (reject")
    assert "(a cancel that ended it was sent)" in verdict["fifo"].violations[0]


def test_two_runs_for_one_key_fail_keys() -> None:
    story = clean()
    story.start(5.5, 5.6, "enqueue", "A2", key="key-a")
    story.read(9.0, "A2", "ERROR", error="cancelled")

    verdict = verdict_of(story)

    assert_only_fails(verdict, "keys")
    assert "key key-a: 202s with 2 run ids" in verdict["keys"].violations[0]


def test_a_run_accepted_for_a_key_whose_answer_was_lost_that_also_ran_fails_keys() -> None:
    story = clean()
    story.log("api0-1", "run_accepted", 4.9, "A-lost", idempotency_key="key-a")
    story.agent("A-lost", 4.5, 4.8)

    verdict = verdict_of(story)

    assert_only_fails(verdict, "keys")
    assert "1 logged accepted by an API" in verdict["granted"].notes[0]


@pytest.mark.parametrize("status", [500, 502])
def test_a_5xx_other_than_503_fails_5xx(status: int) -> None:
    story = clean()
    story.start(8.5, 8.6, "reject", None, status=status)

    assert_only_fails(verdict_of(story), "5xx")


def test_a_503_far_from_any_outage_or_fault_fails_5xx() -> None:
    story = clean()
    story.start(8.5, 8.6, "reject", None, status=503)
    assert verdict_of(story).passed, "within the grace after the outage"

    story.start(20.0, 20.1, "reject", None, status=503)
    assert_only_fails(verdict_of(story), "5xx")


def test_a_start_the_api_shed_is_excused_in_a_crowd_of_starts_only() -> None:
    busy = {"detail": "Too many starts at once, please retry later"}
    story = clean()
    request = {"body": body("reject"), "key": None}
    story.op("start", 20.0, 22.0, request, 503, busy)
    assert_only_fails(verdict_of(story), "5xx")  # alone: the gate shed with no crowd

    for index in range(4):
        story.start(20.5 + index * 0.1, 21.5, "enqueue", None, status=409)
    assert verdict_of(story).passed


def worker_fault(
    story: Story, worker: str, started: float, ended: float, kind: str = "kill-worker"
) -> None:
    story.faults.append(
        FaultRecord(
            kind=kind,
            target=worker,
            started=T0 + started,
            ended=T0 + ended,
            affects=[worker],
        )
    )


def test_a_503_on_any_route_is_excused_while_every_worker_is_down_not_while_one_is() -> None:
    story = clean()
    worker_fault(story, "worker1", 20.0, 60.0)
    story.start(40.0, 40.5, "enqueue", None, status=503)

    verdict = verdict_of(story)
    assert_only_fails(verdict, "5xx")
    assert "(only kill-worker worker1 around it)" in verdict["5xx"].violations[0]

    worker_fault(story, "worker0", 40.2, 41.0)  # both down from 40.2 to 41.0
    story.op("status", 49.0, 50.0, {"run_id": "A", "wait": None}, 503, {"detail": ""})
    story.op("cancel", 40.0, 40.3, {"run_id": "A"}, 503, {"detail": ""})
    assert verdict_of(story).passed, "within the worker grace after 41.0"

    story.op("status", 80.0, 81.0, {"run_id": "A", "wait": None}, 503, {"detail": ""})
    assert_only_fails(verdict_of(story), "5xx")


@pytest.mark.parametrize(
    "kind", ["kill-worker", "pause-worker", "partition-worker", "heartbeat-cut"]
)
def test_a_503_is_excused_in_the_first_seconds_of_one_worker_down(kind: str) -> None:
    # A task it held waits for its timeout (found by the randomized run: an admit stalled 8.4 s
    # behind a worker cut off for 8.4 s, another 10 s behind a worker killed mid-task).
    story = clean()
    worker_fault(story, "worker1", 20.0, 60.0, kind)
    story.start(21.0, 23.0, "enqueue", None, status=503)
    story.op("status", 36.0, 38.0, {"run_id": "A", "wait": None}, 503, {"detail": ""})
    assert verdict_of(story).passed

    # A killed worker's polls closed, a cut heartbeat leaves its worker serving: by now the
    # other worker has every task. A paused or cut-off worker's open polls can take a task's
    # retry again until it is back (the next test).
    later = 38.0 if kind in ("kill-worker", "heartbeat-cut") else 78.0
    story.start(later, later + 2.0, "enqueue", None, status=503)
    assert_only_fails(verdict_of(story), "5xx")


def test_an_agent_of_no_run_an_answer_named_fails_granted() -> None:
    story = clean()
    story.agent("X", 8.5, 8.7, worker="worker1-1")  # between C and the probe: no overlap

    verdict = verdict_of(story)

    assert_only_fails(verdict, "granted")
    assert verdict["granted"].violations == [
        "X: 1 agent_start no answer named, first on worker1-1 at 08:00:08.500 (attempt 1, token 1)"
    ]


def lost_agent(story: Story, run_id: str, at: float) -> None:
    """An agent of ``run_id`` (a document-extractor) that works 0.1 s from ``at``."""
    for event, when in (("agent_start", at), ("agent_error", at + 0.1)):
        story.log("worker1-1", event, when, run_id, attempt=1, agent_type=EXTRACTOR)


def test_an_agent_of_a_run_whose_unkeyed_start_got_no_answer_is_granted_but_noted() -> None:
    story = clean()
    request = {"body": body("reject", EXTRACTOR), "key": None}
    story.op("start", 8.0, 18.0, request, None, error="timeout")
    lost_agent(story, "5f0f3a4e-1c2b-4d5e-8f90-123456789abc", 8.5)

    verdict = verdict_of(story)
    assert verdict.passed
    assert "1 explained by a start that got no answer" in verdict["granted"].notes[0]

    lost_agent(story, "5f0f3a4e-1c2b-4d5e-8f90-123456789abd", 8.7)
    assert_only_fails(verdict_of(story), "granted")  # one lost start explains one run


def test_a_run_made_by_a_start_answered_503_fails_granted_unless_server_or_worker_was_down() -> (
    None
):
    """The API answers 503 only for a start it did not make, while the server and the workers
    answer (trying 300 new users at once: 11 starts answered 503 had run)."""
    story = clean()
    request = {"body": body("reject", EXTRACTOR), "key": None}
    story.op("start", 30.0, 30.3, request, 503, {"detail": "Temporal is unavailable"})
    lost_agent(story, "5f0f3a4e-1c2b-4d5e-8f90-123456789abc", 30.5)

    verdict = verdict_of(story)
    assert verdict.failed() == ["5xx", "granted"]
    [violation] = verdict["granted"].violations
    assert "made by a start answered 503" in violation

    worker_fault(story, "worker1", 29.0, 29.5, "partition-worker")
    assert verdict_of(story).passed


def test_a_run_the_nemesis_admitted_itself_is_named_and_judged_like_any() -> None:
    story = clean()
    story.ops.append(
        story.ops[0].model_copy(
            update={
                "index": len(story.ops),
                "client": "nemesis",
                "api": -1,
                "request": {"body": body("enqueue"), "key": None, "scope": "global"},
                "started": T0 + 8.4,
                "ended": T0 + 8.45,
                "body": {"run_id": "N", "queue_position": None},
            }
        )
    )
    story.agent("N", 8.5, 8.7, result=None, has_result=True)
    story.read(9.0, "N", "DONE", result=None)
    story.regrant("N", 8.42)

    assert verdict_of(story).passed


def test_no_probe_after_healing_fails_liveness() -> None:
    story = clean()
    story.ops = [op for op in story.ops if op.phase != "probe"]
    story.lines = [line for line in story.lines if line.run_id != "P"]

    assert_only_fails(verdict_of(story), "liveness")


def test_scopes_per_user_count_agents_and_probes_per_user() -> None:
    story = clean()
    other_user = "0c8d1b6e-7f1a-4a53-9a4e-3f1f1e0a2b7c"
    story.log("worker1-1", "agent_start", 3.4, "D", attempt=1, user_id=other_user)
    story.log("worker1-1", "agent_complete", 3.9, "D", attempt=1, user_id=other_user)
    story.op("status", 9.0, 9.1, {"run_id": "D", "wait": None}, 200, {"run_id": "D"})

    assert check(story.history(scope=ScopeKind.USER_ID), story.lines).passed
    assert check(story.history(), story.lines).failed() == ["bound"]


def test_walking_back_through_clean_time_skips_the_blocked_intervals() -> None:
    blocked = merged([(8.0, 9.0), (2.0, 5.0), (4.0, 6.0)])

    assert blocked == [(2.0, 6.0), (8.0, 9.0)]
    assert walk_back(10.0, 0.5, blocked) == 9.5
    assert walk_back(10.0, 2.0, blocked) == 7.0  # 1 s after the 8-9 block, 1 s before it
    assert walk_back(10.0, 4.0, blocked) == 1.0  # and across 2-6
    assert walk_back(8.5, 1.0, blocked) == 7.0  # from inside a block


def test_a_run_granted_by_another_scopes_coordinator_is_noted_and_counted_where_it_worked() -> None:
    story = clean()
    other_user = "0c8d1b6e-7f1a-4a53-9a4e-3f1f1e0a2b7c"
    # A run of USER's scope (its id says so) whose agent worked for other_user.
    run_id = "5f0f3a4e-1c2b-4d5e-8f90-123456789abc~u9b64a3a7f8e44f068e5773b50b042f29"
    story.log("worker1-1", "agent_start", 3.4, run_id, attempt=1, user_id=other_user)
    story.log("worker1-1", "agent_error", 3.9, run_id, attempt=1, user_id=other_user)
    story.op("status", 9.0, 9.1, {"run_id": run_id, "wait": None}, 200, {"run_id": run_id})

    verdict = check(story.history(scope=ScopeKind.USER_ID), story.lines)

    assert verdict.passed, "other_user had one agent at a time"
    assert verdict["bound"].notes[-1] == (
        f"runs granted by another scope's coordinator: 1 ({run_id} worked in user:{other_user})"
    )


def test_a_fault_that_failed_or_a_replica_that_kept_quiet_fails_faults() -> None:
    story = clean()
    story.faults.append(
        FaultRecord(
            kind="forged-signal",
            target="run",
            started=T0 + 20.0,
            ended=T0 + 21.0,
            details={"skipped": "no open run"},
        )
    )
    verdict = verdict_of(story)
    assert verdict.passed
    assert verdict["faults"].notes == ["1 skipped (nothing to strike at the time)"]

    story.faults.append(
        FaultRecord(
            kind="other-slots-api",
            target="api2",
            started=T0 + 22.0,
            ended=T0 + 30.0,
            details={"heal": {"logged_settings_differ": False}},
        )
    )
    story.faults.append(
        FaultRecord(
            kind="cli-terminate",
            target="run",
            started=T0 + 31.0,
            ended=T0 + 32.0,
            details={"failed": "Traceback ...\nRuntimeError: the CLI timed out"},
        )
    )
    verdict = verdict_of(story)
    assert_only_fails(verdict, "faults")
    assert verdict["faults"].violations == [
        f"other-slots-api on api2 at {T0 + 22.0:.3f}: the replica never logged "
        "deployment_settings_differ",
        f"cli-terminate on run at {T0 + 31.0:.3f} failed: RuntimeError: the CLI timed out",
    ]


def test_an_agent_complete_written_late_ends_its_span_when_the_agent_stopped() -> None:
    # B's worker was paused after its agent stopped (2.3) while its report was in flight; the
    # run took the report, and the line came once the worker resumed (3.5), after C started.
    story = clean(b_agent=None)
    story.agent("B", 1.3, 3.5, has_result=True, result="rejected", stopped_at=T0 + 2.3)
    assert verdict_of(story).passed

    late = clean(b_agent=None)
    late.agent("B", 1.3, 3.5, has_result=True, result="rejected", stopped_at=T0 + 3.4)
    assert_only_fails(verdict_of(late), "bound")


def _b_reported_then(ended_by: str, result: str = "rejected") -> Story:
    """B's attempt logged agent_reporting (2.3), then its worker ended (2.4) before it could
    write agent_complete."""
    story = clean(b_agent=None)
    story.processes = [life for life in story.processes if life.name != "worker1-1"]
    story.life("worker1-1", "worker", -1.0, 2.4, ended_by)
    story.agent("B", 1.3, None, worker="worker1-1")
    story.log("worker1-1", "agent_reporting", 2.3, "B", attempt=1, has_result=True, result=result)
    return story


def test_a_completion_whose_worker_was_killed_before_its_end_line_counts_once() -> None:
    """The 30-minute run of seed 62207: a worker SIGKILLed 21 ms after its run took the result
    had no time to write agent_complete, and the DONE run was judged completed zero times. The
    attempt's agent_reporting line, with the result the status reports, is the completion."""
    verdict = verdict_of(_b_reported_then("sigkill"))
    assert verdict.passed, [(r.name, r.violations) for r in verdict.properties]
    assert (
        "completions read from agent_reporting (process killed before agent_complete): 1"
        in verdict["once"].notes
    )


def test_a_report_line_is_no_completion_unless_its_worker_was_killed_with_that_result() -> None:
    assert_only_fails(verdict_of(_b_reported_then("sigterm")), "once")
    assert_only_fails(verdict_of(_b_reported_then("sigkill", result="approved")), "once")


def test_a_503_is_excused_in_the_first_seconds_after_a_worker_left_at_its_heal() -> None:
    # Seed 44829: the extra worker of other-slots-worker was stopped (SIGTERM) at the heal, and
    # a coordinator task its poll got as its shutdown began waited out its 10 s timeout.
    story = clean()
    story.faults.append(
        FaultRecord(kind="other-slots-worker", target="worker2", started=T0 + 20.0, ended=T0 + 30.0)
    )
    story.start(40.0, 42.0, "enqueue", None, status=503)
    assert verdict_of(story).passed

    story.start(48.0, 50.0, "enqueue", None, status=503)  # the other workers have every task
    assert_only_fails(verdict_of(story), "5xx")

    leaves_not = clean()
    worker_fault(leaves_not, "worker1", 20.0, 30.0, "kill-worker")  # restarted, not gone
    leaves_not.start(40.0, 42.0, "enqueue", None, status=503)
    assert_only_fails(verdict_of(leaves_not), "5xx")


def test_a_503_is_excused_until_one_timeout_after_a_paused_worker_resumed() -> None:
    # Seed 52973: a coordinator's task timed out on a worker paused at 0 s, its retry went to
    # the same worker's other open poll, and the worker, resumed at 11.2 s, dropped it as it
    # evicted the run; admits sent at 17.05 s answered 503 at 20.1 s.
    for kind in ("pause-worker", "partition-worker"):
        story = clean()
        worker_fault(story, "worker0", 20.0, 31.2, kind)
        story.start(37.05, 40.1, "enqueue", None, status=503)
        assert verdict_of(story).passed, kind

        story.start(50.0, 52.0, "enqueue", None, status=503)  # the worker has been back 18 s
        assert_only_fails(verdict_of(story), "5xx")

    killed = clean()
    worker_fault(killed, "worker0", 20.0, 31.2, "kill-worker")  # its polls closed as it died
    killed.start(37.5, 40.1, "enqueue", None, status=503)
    assert_only_fails(verdict_of(killed), "5xx")
