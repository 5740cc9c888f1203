"""What a watcher answers a status read with (agent_runner/runs/watchers.py): only a status it
is sure is current."""

from __future__ import annotations

from agent_runner.runs.follow import BEHIND, CAUGHT_UP, RunEvent
from agent_runner.runs.watchers import RunWatch
from agent_runner.status import run_status
from tests.unit.test_status import GRANTED, QUEUED, RUN


async def test_a_watcher_behind_its_run_answers_no_status_until_it_caught_up() -> None:
    watch = RunWatch(RUN, lambda status: status.state.encode())
    queued = run_status(RUN, QUEUED, None)
    granted = run_status(RUN, GRANTED, None)
    assert queued is not None
    assert granted is not None

    watch.publish(RunEvent("q1", "queued", queued))
    assert watch.latest() is None, "not yet caught up"
    watch.publish(CAUGHT_UP)
    latest = watch.latest()
    assert latest is not None
    assert latest.event.status == queued

    # The coordinator changed (it granted the run); reading its record may take seconds (the
    # randomized run read "position 1" 2 s after the grant, and judged FIFO broken).
    watch.publish(BEHIND)
    assert watch.latest() is None

    watch.publish(RunEvent("q2", "pending", granted))
    watch.publish(CAUGHT_UP)
    latest = watch.latest()
    assert latest is not None
    assert latest.event.status == granted
