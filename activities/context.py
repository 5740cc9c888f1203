"""The :class:`~agent_runner.agents.AgentContext` an agent gets: its run, its logger, its lease,
and its way to report progress."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass, field

import structlog
from temporalio import activity
from temporalio.client import Client

from activities.lease import Lease
from agent_runner.contract import MAX_PROGRESS_MESSAGE, PROGRESS, Progress
from agent_runner.validation import shortened

# Progress reports closer together than this are merged into the next one; a long attempt's
# reports are spaced by a hundredth of its age, so its history grows with the log of its length.
PROGRESS_EVERY_SECONDS = 0.5
PROGRESS_REPORTS_PER_AGE = 100


@dataclass
class RunContext:
    run_id: str
    agent_type: str
    user_id: str
    attempt: int
    fencing_token: int
    log: structlog.stdlib.BoundLogger
    lease: Lease
    events: RunEvents
    progress: tuple[float, str] | None = field(default=None)

    def checkpoint(self) -> None:
        self.lease.check()

    async def report_progress(self, fraction: float, message: str = "") -> None:
        if not math.isfinite(fraction):
            raise ValueError(f"progress must be a number from 0 to 1, got {fraction!r}")
        report = (min(1.0, max(0.0, fraction)), shortened(str(message), MAX_PROGRESS_MESSAGE))
        if report == self.progress:
            return
        self.progress = report
        # The lease keeper's heartbeats carry it too: the Web UI shows it on the attempt.
        self.lease.details = {"fraction": report[0], "message": report[1], "attempt": self.attempt}
        await self.events.progress(self.attempt, *report)


class RunEvents:
    """Progress signals to the attempt's own run (by run id: never to a later run of the
    slot)."""

    def __init__(self, client: Client, info: activity.Info) -> None:
        assert info.workflow_id is not None
        self._handle = client.get_workflow_handle(info.workflow_id, run_id=info.workflow_run_id)
        self._began = time.monotonic()
        self._last_progress = 0.0
        self._pending: Progress | None = None
        self._flusher: asyncio.Future[None] | None = None

    async def send(self, event: Progress) -> None:
        """Best effort: a run that is gone cannot be told anything, and needs not be."""
        with contextlib.suppress(Exception):
            await self._handle.signal(PROGRESS.name, event)

    async def progress(self, attempt: int, fraction: float, message: str) -> None:
        event = Progress(attempt, fraction, message)
        now = time.monotonic()
        every = max(PROGRESS_EVERY_SECONDS, (now - self._began) / PROGRESS_REPORTS_PER_AGE)
        if now - self._last_progress < every and fraction < 1.0:
            # Merged: sent when its turn comes, unless a later report replaces it first.
            if self._pending is None:
                self._flusher = asyncio.ensure_future(
                    self._flush_after(self._last_progress + every - now)
                )
            self._pending = event
            return
        self._last_progress, self._pending = now, None
        await self.send(event)

    async def _flush_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.flush()

    async def flush(self) -> None:
        """Send a merged progress report still waiting, if any."""
        if self._pending is not None:
            event, self._pending = self._pending, None
            self._last_progress = time.monotonic()
            await self.send(event)

    def close(self) -> None:
        """The attempt is over: drop a report still waiting."""
        self._pending = None
        if self._flusher is not None:
            self._flusher.cancel()
