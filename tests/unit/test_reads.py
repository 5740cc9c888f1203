"""Reads of runs' records from their coordinator (agent_runner/runs/reads.py): one query per
scope at a time, carrying every read that arrived meanwhile."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from agent_runner.contract import RunRecord
from agent_runner.ids import Scope
from agent_runner.runs.reads import RecordReads
from tests.unit.test_status import QUEUED

SCOPE = Scope("agent-runner")


class Coordinator:
    """Answers each query once the test lets it, with the records it keeps then."""

    def __init__(self, run_ids: list[str]) -> None:
        self.records = {run_id: replace(QUEUED, run_id=run_id) for run_id in run_ids}
        self.queries: list[list[str]] = []
        self.go = asyncio.Event()

    async def query(self, scope: Scope, run_ids: list[str]) -> list[RunRecord]:
        assert scope == SCOPE
        self.queries.append(run_ids)
        await self.go.wait()
        self.go.clear()
        return [self.records[run_id] for run_id in run_ids if run_id in self.records]


async def test_reads_that_arrive_together_are_one_query_and_each_gets_its_record() -> None:
    # A dozen readers of waiting runs asked at once, and the server refused all but one
    # ("consistent query buffer is full"): a 503 with no fault anywhere (the randomized run).
    coordinator = Coordinator(["a", "b", "c"])
    reads = RecordReads(coordinator.query)
    first = asyncio.ensure_future(reads.read(SCOPE, "a"))
    await asyncio.sleep(0)  # its query is in flight
    later = [asyncio.ensure_future(reads.read(SCOPE, run_id)) for run_id in "abcx"]
    await asyncio.sleep(0)

    coordinator.go.set()
    assert (await first).run_id == "a"  # type: ignore[union-attr]
    await asyncio.sleep(0)
    # Those that came while it was in flight wait for the next one: what the coordinator said
    # after each read began.
    coordinator.go.set()
    answers = await asyncio.gather(*later)

    assert coordinator.queries == [["a"], ["a", "b", "c", "x"]]
    assert [answer.run_id if answer else None for answer in answers] == ["a", "b", "c", None]


async def test_a_failed_query_fails_every_read_it_carried() -> None:
    async def refused(scope: Scope, run_ids: list[str]) -> list[RunRecord]:
        raise RuntimeError("no coordinator")

    reads = RecordReads(refused)
    results = await asyncio.gather(
        reads.read(SCOPE, "a"), reads.read(SCOPE, "b"), return_exceptions=True
    )
    assert [str(result) for result in results] == ["no coordinator", "no coordinator"]
    with pytest.raises(RuntimeError):
        await reads.read(SCOPE, "c")
