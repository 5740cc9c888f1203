"""What a watcher answers a status read with (agent_runner/runs/watchers.py): only a status it
is sure is current."""

from __future__ import annotations

import asyncio

import pytest

from agent_runner.runs.errors import TemporalUnavailableError
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


async def test_a_read_waits_for_the_watchers_next_try_not_its_last_failure() -> None:
    """Found by the randomized run (seed 27103): a status read with ``wait`` answered 503 at
    once, a second after a worker's partition healed, with the error of the watcher's try made
    during the partition; its next try, a moment later, would have answered."""
    watch = RunWatch(RUN, lambda status: status.state.encode())
    watch.fail(TemporalUnavailableError("Temporal is unavailable: h2 protocol error"))
    queued = run_status(RUN, QUEUED, None)
    assert queued is not None

    reader = asyncio.ensure_future(watch.first(5.0))
    await asyncio.sleep(0.05)
    assert not reader.done(), "answered with a failure from before the read"
    watch.publish(RunEvent("q1", "queued", queued))
    await asyncio.wait_for(reader, 1.0)

    # A failure of a try made while it waits is its answer.
    watch = RunWatch(RUN, lambda status: status.state.encode())
    watch.fail(TemporalUnavailableError("before"))
    reader = asyncio.ensure_future(watch.first(5.0))
    await asyncio.sleep(0.05)
    watch.fail(TemporalUnavailableError("during"))
    with pytest.raises(TemporalUnavailableError, match="during"):
        await asyncio.wait_for(reader, 1.0)
