"""Concurrent enqueues into one scope's queue from this process go out as one call.

Temporal lets only a few updates be in flight on one workflow at once (ten by default), and
each update costs the queue workflow a workflow task; a burst of 200 enqueues as 200 updates
would mostly be refused and retried. Here, while one call is out, the next requests gather and
go out together as the next call, in the order they arrived: FIFO holds within a process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from agent_runner.locations import Scope
from agent_runner.queue_types import EnqueueRequest, EnqueueResult

Send = Callable[[Scope, Sequence[EnqueueRequest]], Awaitable[list[EnqueueResult]]]
MAX_BATCH = 100


@dataclass
class _Waiting:
    scope: Scope
    items: list[tuple[EnqueueRequest, asyncio.Future[EnqueueResult]]] = field(default_factory=list)
    sender: asyncio.Task[None] | None = None


class EnqueueBatches:
    def __init__(self, send: Send) -> None:
        self._send = send
        self._waiting: dict[str, _Waiting] = {}

    async def enqueue(self, scope: Scope, request: EnqueueRequest) -> EnqueueResult:
        waiting = self._waiting.setdefault(scope.queue_id, _Waiting(scope))
        answer: asyncio.Future[EnqueueResult] = asyncio.get_running_loop().create_future()
        waiting.items.append((request, answer))
        if waiting.sender is None or waiting.sender.done():
            waiting.sender = asyncio.ensure_future(self._drain(waiting))
        return await asyncio.shield(answer)

    async def _drain(self, waiting: _Waiting) -> None:
        while waiting.items:
            batch, waiting.items = waiting.items[:MAX_BATCH], waiting.items[MAX_BATCH:]
            try:
                results = await self._send(waiting.scope, [request for request, _ in batch])
            except Exception as err:
                for _, answer in batch:
                    if not answer.done():
                        answer.set_exception(err)
                continue
            for (_, answer), result in zip(batch, results, strict=True):
                if not answer.done():
                    answer.set_result(result)
