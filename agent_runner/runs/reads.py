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

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from agent_runner.contract import RunRecord
from agent_runner.ids import Scope

# Run ids asked in one query at most (the coordinator answers at most 1000).
READ_MAX = 500
Query = Callable[[Scope, list[str]], Awaitable[list[RunRecord]]]


@dataclass
class _Waiting:
    run_id: str
    answer: asyncio.Future[RunRecord | None]


@dataclass
class _Scope:
    scope: Scope
    waiting: list[_Waiting] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None


class RecordReads:
    """One reader per scope; ``query(scope, run_ids)`` makes the call."""

    def __init__(self, query: Query) -> None:
        self._query = query
        self._scopes: dict[str, _Scope] = {}

    async def read(self, scope: Scope, run_id: str) -> RunRecord | None:
        """The run's record (None: its coordinator does not know it); the query's error if it
        failed."""
        pending = self._scopes.setdefault(scope.id, _Scope(scope))
        answer: asyncio.Future[RunRecord | None] = asyncio.get_running_loop().create_future()
        pending.waiting.append(_Waiting(run_id, answer))
        if pending.reader is None or pending.reader.done():
            pending.reader = asyncio.create_task(self._drain(pending))
        return await answer

    async def _drain(self, pending: _Scope) -> None:
        while pending.waiting:
            batch, pending.waiting = pending.waiting[:READ_MAX], pending.waiting[READ_MAX:]
            batch = [item for item in batch if not item.answer.done()]
            if not batch:
                continue
            try:
                records = await self._query(pending.scope, sorted({i.run_id for i in batch}))
            except Exception as err:
                for item in batch:
                    if not item.answer.done():
                        item.answer.set_exception(err)
                continue
            by_run = {record.run_id: record for record in records}
            for item in batch:
                if not item.answer.done():
                    item.answer.set_result(by_run.get(item.run_id))
        if self._scopes.get(pending.scope.id) is pending and not pending.waiting:
            del self._scopes[pending.scope.id]
