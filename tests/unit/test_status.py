"""A run's status from its coordinator's record and its execution's view (agent_runner/status.py),
and the events a stream shows for its changes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from agent_runner.contract import Progress, RunOutcome, RunPhase, RunRecord, RunState, Waiting
from agent_runner.status import AttemptFailure, ExecutionView, event_name, run_status

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
RUN = "01a21269-664b-7e42-949e-644fecafa2cb"
USER = "9b64a3a7-f8e4-4f06-8e57-73b50b042f29"
QUEUED = RunRecord(
    run_id=RUN,
    agent_type="policy-checker",
    user_id=USER,
    phase=RunPhase.QUEUED,
    accepted_at=T0,
    queued_at=T0,
    queue_position=2,
    workflow_id="agent-runner",
    waiting_for=Waiting.QUEUE,
)
GRANTED = replace(
    QUEUED,
    phase=RunPhase.GRANTED,
    queue_position=None,
    slot=0,
    granted_at=T0,
    workflow_id="agent-runner:slot-0",
    temporal_run_id="t-1",
)
EXECUTION = ExecutionView("agent-runner:slot-0", "t-1", started_at=T0)


def test_nobody_knows_it():
    assert run_status(RUN, None, None) is None


def test_a_waiting_run_says_its_place_and_why():
    status = run_status(RUN, QUEUED, None)
    assert status is not None
    assert (status.state, status.queue_position, status.waiting_for) == (
        RunState.PENDING,
        2,
        Waiting.QUEUE,
    )
    assert status.workflow_id == "agent-runner"


def test_a_run_that_ended_in_the_queue_says_how():
    ended = replace(
        QUEUED,
        phase=RunPhase.ENDED,
        outcome=RunOutcome(RunState.ERROR, error="cancelled", finished_at=T0),
    )
    status = run_status(RUN, ended, None)
    assert status is not None
    assert (status.state, status.error, status.queue_position) == (
        RunState.ERROR,
        "cancelled",
        None,
    )


def test_its_execution_says_how_it_goes():
    waiting = run_status(RUN, GRANTED, replace(EXECUTION, attempt=1))
    assert waiting is not None
    assert (waiting.state, waiting.waiting_for) == (RunState.PENDING, Waiting.WORKER)
    working = replace(EXECUTION, attempt=1, working=True, claimed=True)
    progress = Progress(1, 0.5, "checking")
    running = run_status(RUN, GRANTED, replace(working, progress=progress))
    assert running is not None
    assert (running.state, running.attempt, running.progress) == (RunState.RUNNING, 1, progress)
    paused = run_status(RUN, GRANTED, replace(working, paused=True))
    assert paused is not None
    assert paused.waiting_for == Waiting.PAUSED
    done = replace(
        working, outcome=RunOutcome(RunState.DONE, "approved", attempt=1, finished_at=T0)
    )
    final = run_status(RUN, GRANTED, done)
    assert final is not None
    assert (final.state, final.result, final.finished_at) == (RunState.DONE, "approved", T0)


def test_a_stream_shows_each_change_once_and_names_it():
    queued = run_status(RUN, QUEUED, None)
    moved_up = run_status(RUN, replace(QUEUED, queue_position=1), None)
    pending = run_status(RUN, GRANTED, replace(EXECUTION, attempt=1))
    working = replace(EXECUTION, attempt=1, working=True, claimed=True)
    running = run_status(RUN, GRANTED, working)
    reading = run_status(RUN, GRANTED, replace(working, progress=Progress(1, 0.2, "reading")))
    failure = AttemptFailure(1, "RuntimeError: scanner offline", retrying=True)
    failed = run_status(RUN, GRANTED, replace(working, working=False, last_failure=failure))
    second = run_status(
        RUN, GRANTED, replace(working, attempt=2, working=False, last_failure=failure)
    )
    done = run_status(
        RUN,
        GRANTED,
        replace(working, outcome=RunOutcome(RunState.DONE, "ok", attempt=2, finished_at=T0)),
    )
    statuses = [queued, queued, moved_up, pending, running, reading, failed, second, done]
    names = [
        event_name(before, after)
        for before, after in zip([None, *statuses], statuses, strict=False)
        if after is not None
    ]
    assert names == [
        "queued",
        None,
        "queued",
        "pending",
        "running",
        "progress",
        "attempt_failed",
        "running",
        "done",
    ]
