"""Reading runs' records from their scope's coordinator: one query at a time per scope from this
process, carrying every read that arrived meanwhile.

A coordinator answers queries between its workflow tasks, and the server holds only one query
for it while a task is in flight: the others are refused ("consistent query buffer is full",
``RESOURCE_EXHAUSTED``), and the client backs off for a second or more before it asks again.
Every stream, long poll and status read of a waiting run asks after each change of its
coordinator, so a dozen readers in one process asked a dozen times at once and some answered
``503`` with no fault anywhere (found by the randomized run). One query per scope at a time,
for all of them, answers each read with what the coordinator said after the read began.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from agent_runner.contract import RunRecord
from agent_runner.ids import Scope
from agent_runner.runs.batches import ScopeBatches

# Run ids asked in one query at most (the coordinator answers at most 1000).
READ_MAX = 500
Query = Callable[[Scope, list[str]], Awaitable[list[RunRecord]]]


class RecordReads:
    """One reader per scope; ``query(scope, run_ids)`` makes the call."""

    def __init__(self, query: Query) -> None:
        async def one_query(scope: Scope, run_ids: list[str]) -> list[RunRecord]:
            return await query(scope, sorted(set(run_ids)))

        self._batches: ScopeBatches[str, RunRecord] = ScopeBatches(
            one_query,
            key=lambda run_id: run_id,
            answered=lambda record: record.run_id,
            most=READ_MAX,
        )

    async def read(self, scope: Scope, run_id: str) -> RunRecord | None:
        """The run's record (None: its coordinator does not know it); the query's error if it
        failed."""
        return await self._batches.ask(scope, run_id)
