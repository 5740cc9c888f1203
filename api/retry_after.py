"""``Retry-After`` for a busy 409: when the run holding the singleton is likely done."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from cachetools import LRUCache

from api.coalesce import Coalesced


class RunStartTimes:
    """When each run that held the singleton started: fetched once per run, even when a burst of
    rejected starts asks at the same moment, and remembered (a start time never changes)."""

    def __init__(self, maxsize: int = 256) -> None:
        self._known: LRUCache[str, datetime] = LRUCache(maxsize=maxsize)
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
                self._known[run_id] = started_at
        return started_at


def retry_after_seconds(started_at: datetime | None, agent_duration_seconds: float) -> int:
    """Seconds until the holder is likely done: its expected end, at least 1 s."""
    remaining = agent_duration_seconds
    if started_at is not None:
        remaining -= (datetime.now(UTC) - started_at).total_seconds()
    return max(1, math.ceil(remaining))
