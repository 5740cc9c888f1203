"""One watcher per open run per API process: it follows the run's history (one long poll at a
time, :mod:`agent_runner.runs.follow`) and feeds every stream, long poll and status read of
that run in this process, so a hundred subscribers cost what one does."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import structlog
from temporalio.service import RPCError

from agent_runner.runs import RunNotFoundError, Runs, RunStatus
from agent_runner.runs.errors import TemporalUnavailableError, is_unavailable
from agent_runner.runs.follow import Behind, CaughtUp, Followed, RunEvent, event_order, follow_run

logger = structlog.stdlib.get_logger(__name__)
# Events kept per run for clients that resume (Last-Event-ID); the oldest go first.
MAX_EVENTS_KEPT = 5000
# A watcher nobody has used for this long stops; a finished run's is kept this long for late
# readers and resumes.
IDLE_SECONDS = 60.0
# Pause before following again after Temporal failed us.
RETRY_SECONDS = 1.0


@dataclass(frozen=True)
class Published:
    event: RunEvent
    # The status, rendered once for every reader.
    body: bytes


class RunWatch:
    """What this process knows of one run, as events."""

    def __init__(self, run_id: str, render: Callable[[RunStatus], bytes]) -> None:
        self.run_id = run_id
        self.published: list[Published] = []
        # How many of the oldest events were let go (indexes stay absolute).
        self.dropped = 0
        # Whether the last event is the run's status now (every change recorded so far seen).
        self.current = False
        self.error: Exception | None = None
        self.users = 0
        self.last_used = time.monotonic()
        self._render = render
        self._changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        # Set when the process shuts down: its streams end (their clients reconnect elsewhere).
        self.ending = False

    @property
    def final(self) -> bool:
        return bool(self.published) and self.published[-1].event.status.is_final

    def latest(self) -> Published | None:
        """The run's status now, if this watcher is sure of it."""
        self.last_used = time.monotonic()
        return self.published[-1] if self.current and self.published else None

    def publish(self, item: Followed) -> None:
        if isinstance(item, Behind):
            self.current = self.final
            return
        if isinstance(item, CaughtUp):
            self.current = True
        elif not self.published or _after(item.id, self.published[-1].event.id):
            self.published.append(Published(item, self._render(item.status)))
            if len(self.published) > MAX_EVENTS_KEPT:
                del self.published[0]
                self.dropped += 1
            self.current = self.current or item.status.is_final
            self.error = None
        else:
            return
        self._notify()

    def fail(self, error: Exception) -> None:
        self.error, self.current = error, False
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self, timeout: float) -> bool:
        """Return at the next change (True), or after ``timeout`` seconds (False)."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def first(self, timeout: float) -> None:
        """Wait until the watcher knows anything of the run, or failed to since this call
        began; raises that error. A failure from before the call is not this reader's: the
        watcher tries again within a second (RETRY_SECONDS), and the reader waits for that try
        (the randomized run met a read answered 503 at once, a second after a worker's
        partition had healed, with the error of a try made during it)."""
        deadline = time.monotonic() + timeout
        earlier = self.error
        while not self.published and (self.error is None or self.error is earlier):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TemporalUnavailableError("Temporal did not answer in time")
            await self.changed(remaining)
        if not self.published and self.error is not None:
            raise self.error

    async def caught_up(self, timeout: float) -> None:
        """Wait until the watcher has seen every change recorded so far (its last event is the
        run's status now), or it failed, or ``timeout`` seconds passed."""
        deadline = time.monotonic() + timeout
        while not (self.current or self.error or self.ending):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await self.changed(remaining)

    def end_streams(self) -> None:
        """End every stream of this run once it has what is already known (see ``ending``)."""
        self.ending = True
        self._notify()

    async def events_after(
        self, last_event_id: str | None, keepalive: float
    ) -> AsyncIterator[Published | None]:
        """The events after ``last_event_id`` (without one: the latest, then each new one),
        until the final one, or until the process shuts down; ``None`` each ``keepalive``
        seconds without an event."""
        self.users += 1
        try:
            index = self._start(last_event_id)
            while True:
                index = max(index, self.dropped)
                while index < self.dropped + len(self.published):
                    published = self.published[index - self.dropped]
                    index += 1
                    yield published
                    if published.event.status.is_final:
                        return
                if self.final:
                    return  # resumed after the final event: nothing more will come
                if self.ending:
                    return
                if not await self.changed(keepalive):
                    yield None
                self.last_used = time.monotonic()
        finally:
            self.users -= 1
            self.last_used = time.monotonic()

    def _start(self, last_event_id: str | None) -> int:
        """Where a stream starts: without an id, at the latest event; else at the first event
        after it; at the latest event's id, with the next event to come. An id past the latest
        event (one this stream never sent, or not yet here) starts at the latest event again:
        a made-up id hides nothing, the run's end included."""
        end = self.dropped + len(self.published)
        latest = max(self.dropped, end - 1)
        if last_event_id is None or not self.published:
            return latest
        for index, published in enumerate(self.published):
            if _after(published.event.id, last_event_id):
                return self.dropped + index
        return end if self.published[-1].event.id == last_event_id else latest

    def knows(self, event_id: str) -> bool:
        """Whether ``event_id`` is an event of this run's stream this watcher has seen."""
        return any(published.event.id == event_id for published in self.published)


class Watchers:
    """The watchers of one API process."""

    def __init__(self, render: Callable[[RunStatus], bytes], limit: int = 2000) -> None:
        self._watches: dict[str, RunWatch] = {}
        self._render = render
        self._limit = limit
        self._sweeper: asyncio.Task[None] | None = None
        self._ending = False

    def count(self) -> int:
        return len(self._watches)

    def subscribers(self) -> int:
        return sum(watch.users for watch in self._watches.values())

    def peek(self, run_id: str) -> RunWatch | None:
        return self._watches.get(run_id)

    def watch(self, runs: Runs, run_id: str) -> RunWatch | None:
        """The run's watcher, started if needed; None when this process watches too many.
        ``run_id`` must be a run id as it was given out (one watcher per run, not per
        spelling: :meth:`Runs.locate` first)."""
        watch = self._watches.get(run_id)
        if watch is not None:
            watch.last_used = time.monotonic()
            return watch
        if len(self._watches) >= self._limit:
            return None
        watch = RunWatch(run_id, self._render)
        watch.ending = self._ending
        watch.task = asyncio.create_task(_follow(runs, watch))
        watch.task.add_done_callback(lambda _: self._forget_unknown(run_id, watch))
        self._watches[run_id] = watch
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep())
        return watch

    def _forget_unknown(self, run_id: str, watch: RunWatch) -> None:
        """A run that does not exist is not kept (its readers hold the watcher and its error):
        made-up ids cannot fill the table."""
        if isinstance(watch.error, RunNotFoundError) and self._watches.get(run_id) is watch:
            del self._watches[run_id]

    async def _sweep(self) -> None:
        while self._watches:
            await asyncio.sleep(IDLE_SECONDS / 4)
            now = time.monotonic()
            for run_id, watch in list(self._watches.items()):
                if watch.users == 0 and now - watch.last_used > IDLE_SECONDS:
                    self._drop(run_id, watch)

    def _drop(self, run_id: str, watch: RunWatch) -> None:
        del self._watches[run_id]
        if watch.task is not None:
            watch.task.cancel()

    def end_streams(self, reason: str = "shutdown") -> int:
        """End every open events stream of this process, now and from now on (each after the
        events it has not sent yet): at shutdown, or the server would wait for them for ever.
        Their clients reconnect, to another replica, with Last-Event-ID. Returns how many."""
        if self._ending:
            return 0
        self._ending = True
        streams = self.subscribers()
        for watch in self._watches.values():
            watch.end_streams()
        logger.info("event_streams_closed", reason=reason, streams=streams)
        return streams

    async def close(self) -> None:
        self.end_streams()
        tasks = [watch.task for watch in self._watches.values() if watch.task is not None]
        if self._sweeper is not None:
            tasks.append(self._sweeper)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._watches.clear()


async def _follow(runs: Runs, watch: RunWatch) -> None:
    """Follow the run until its final event; after a failure, follow it again from its first
    event (the ids say which events the watcher already has)."""
    while not watch.final:
        try:
            async for item in follow_run(runs, watch.run_id):
                watch.publish(item)
            return
        except RunNotFoundError as err:
            watch.fail(err)
            return
        except (RPCError, TemporalUnavailableError) as err:
            if isinstance(err, RPCError) and not is_unavailable(err):
                logger.exception("run_watch_failed", run_id=watch.run_id)
            else:
                logger.info("run_watch_retry", run_id=watch.run_id, error=str(err))
            watch.fail(TemporalUnavailableError(f"Temporal is unavailable: {err}"))
        except Exception as err:
            logger.exception("run_watch_failed", run_id=watch.run_id)
            watch.fail(err)
        await asyncio.sleep(RETRY_SECONDS)


def _after(event_id: str, last_id: str) -> bool:
    """Whether ``event_id`` comes after ``last_id`` in a run's stream."""
    mine, theirs = event_order(event_id), event_order(last_id)
    return mine is not None and theirs is not None and mine > theirs
