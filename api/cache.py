"""Small in-process caches of facts that never change once known."""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Generic, TypeVar

from agent_runner.runs import RunStatus

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    def __init__(self, maxsize: int) -> None:
        self._items: OrderedDict[K, V] = OrderedDict()
        self._maxsize = maxsize

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._maxsize:
            self._items.popitem(last=False)


class FinishedRuns:
    """Finished runs' status bodies, rendered once: they never change, so reading one again
    costs no Temporal call and no serialization."""

    def __init__(self, maxsize: int = 4096) -> None:
        self._bodies: LRU[str, bytes] = LRU(maxsize)
        # Run ids seen finished, kept even with the cache off, so metrics count each run once.
        self._seen: LRU[str, bool] = LRU(max(maxsize, 4096))
        self._enabled = maxsize > 0

    def get(self, run_id: str) -> bytes | None:
        return self._bodies.get(run_id) if self._enabled else None

    def remember(self, status: RunStatus, body: bytes) -> bool:
        """Keep a final status's body; True the first time this process sees the run finished."""
        if not status.is_final or self._seen.get(status.run_id):
            return False
        self._seen.put(status.run_id, True)
        if self._enabled:
            self._bodies.put(status.run_id, body)
        return True


class Coalesced(Generic[V]):
    """Concurrent reads of the same key share one in-flight call: 32 clients polling the same
    open run cost one Temporal describe at a time, not 32. Nothing is kept once it returns."""

    def __init__(self) -> None:
        self._inflight: dict[str, asyncio.Future[V]] = {}

    async def get(self, key: str, fetch: Callable[[], Awaitable[V]]) -> V:
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(fetch())
            self._inflight[key] = future
            future.add_done_callback(lambda _: self._inflight.pop(key, None))
        return await asyncio.shield(future)


class RunStartTimes:
    """When each run that held the singleton started: fetched once per run, even when a burst of
    rejected starts asks at the same moment, and remembered (a start time never changes)."""

    def __init__(self, maxsize: int = 256) -> None:
        self._known: LRU[str, datetime] = LRU(maxsize)
        self._fetching: Coalesced[datetime | None] = Coalesced()

    async def get(
        self, run_id: str, fetch: Callable[[], Awaitable[datetime | None]]
    ) -> datetime | None:
        """The start time, or None when it cannot be had now (the caller estimates without)."""
        started_at = self._known.get(run_id)
        if started_at is None:
            try:
                started_at = await self._fetching.get(run_id, fetch)
            except Exception:
                return None
            if started_at is not None:
                self._known.put(run_id, started_at)
        return started_at


def retry_after_seconds(started_at: datetime | None, agent_duration_seconds: float) -> int:
    """Seconds until the holder is likely done: its expected end, at least 1 s."""
    remaining = agent_duration_seconds
    if started_at is not None:
        remaining -= (datetime.now(UTC) - started_at).total_seconds()
    return max(1, math.ceil(remaining))
