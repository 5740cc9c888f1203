"""Single flight: concurrent calls for the same key share one in-flight call."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from cachetools import TTLCache

V = TypeVar("V")


class Coalesced(Generic[V]):
    """32 clients polling the same open run cost one Temporal describe at a time, not 32.
    Nothing is kept once the call returns."""

    def __init__(self) -> None:
        self._inflight: dict[str, asyncio.Future[V]] = {}

    async def get(self, key: str, fetch: Callable[[], Awaitable[V]]) -> V:
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(fetch())
            self._inflight[key] = future
            future.add_done_callback(lambda _: self._inflight.pop(key, None))
        return await asyncio.shield(future)


class Recent(Generic[V]):
    """A value fetched at most once per ``ttl_seconds`` per key (shared by concurrent callers)."""

    def __init__(self, ttl_seconds: float, maxsize: int = 256) -> None:
        self._known: TTLCache[str, V] = TTLCache(maxsize=maxsize, ttl=ttl_seconds)
        self._fetching: Coalesced[V] = Coalesced()

    async def get(self, key: str, fetch: Callable[[], Awaitable[V]]) -> V:
        if key in self._known:
            return self._known[key]
        value = await self._fetching.get(key, fetch)
        self._known[key] = value
        return value
