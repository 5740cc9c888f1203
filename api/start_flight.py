"""Concurrent starts in one API process share one start in flight.

A burst of 200 starts would otherwise be 200 calls on one workflow id: the server answers
most of them "busy" (RESOURCE_EXHAUSTED) and every answer is slow. Here the first caller's start
goes out; the others wait for it. If it started a run or found one open, they are busy naming
that run, with no call of their own. Any other outcome (an error, a timeout) they try
themselves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from agent_runner.runs import AgentBusyError


class StartFlights:
    def __init__(self) -> None:
        self._leaders: dict[str, asyncio.Future[str]] = {}

    async def start(self, key: str, attempt: Callable[[], Awaitable[str]]) -> str:
        """Run ``attempt`` for ``key`` unless a start for ``key`` is already in flight."""
        leader = self._leaders.get(key)
        if leader is not None:
            try:
                run_id = await asyncio.shield(leader)
            except AgentBusyError as busy:
                raise AgentBusyError(busy.running_run_id) from None
            except Exception:  # noqa: S110 (any other outcome: the follower tries itself)
                pass
            else:
                raise AgentBusyError(run_id)
        future = asyncio.ensure_future(attempt())
        if key not in self._leaders:
            self._leaders[key] = future
            future.add_done_callback(lambda done: self._forget(key, done))
        return await asyncio.shield(future)

    def _forget(self, key: str, done: asyncio.Future[str]) -> None:
        if self._leaders.get(key) is done:
            del self._leaders[key]
        if not done.cancelled():
            done.exception()  # retrieved: a failure nobody else awaited is not "never retrieved"
