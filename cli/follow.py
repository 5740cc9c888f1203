"""Following a run until it ends: its events stream (``GET /agents/runs/{id}/events``,
Server-Sent Events) when the API has one, else long polls of its status.

Once the API has answered, a dropped connection is retried with backoff (an API restarting, a
proxy timing out) for up to ``RECONNECT_SECONDS``, and the stream resumes after the last event
seen (``Last-Event-ID``). An API that cannot be reached at all is reported at once. An API
without the events route answers 404 for it while the run's status is 200: then the follower
long-polls instead."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
from httpx_sse import connect_sse

from cli.client import ApiClient, run_path
from cli.errors import CliError, ExitCode
from cli.models import RunStatus, transitions

STREAM_EVENTS = frozenset(
    {"queued", "pending", "running", "progress", "attempt_failed", "done", "error"}
)
FINAL_EVENTS = frozenset({"done", "error"})
# The server writes a keepalive every 15 s; this much silence means the connection is dead.
STREAM_READ_TIMEOUT = httpx.Timeout(45.0, connect=5.0)
# How long the API may stay away (since the last answer) before following gives up.
RECONNECT_SECONDS = 60.0
FIRST_DELAY_SECONDS = 0.5
MAX_DELAY_SECONDS = 8.0
LONG_POLL_SECONDS = 30.0
# A long poll answers on a change of state, not of progress: while a run works, ask often
# enough that its progress bar moves.
RUNNING_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class RunEvent:
    """One event of a run: its name as the events stream names it, and the run's status."""

    name: str
    status: RunStatus


class EventsRouteMissing(Exception):
    """The API has no events stream (an older API); the run's status is attached."""

    def __init__(self, status: RunStatus) -> None:
        super().__init__("no events route")
        self.status = status


class Retryable(Exception):
    """A failure worth another try (a dropped stream, a 5xx), within the reconnect budget."""

    def __init__(self, error: CliError) -> None:
        super().__init__(error.message)
        self.error = error


class Backoff:
    """Waits longer after each failure in a row; gives up once the API has been away for
    ``RECONNECT_SECONDS``."""

    def __init__(self) -> None:
        self.failures = 0
        #: The first wait; an events stream's ``retry:`` field sets it.
        self.first_delay = FIRST_DELAY_SECONDS
        self._away_since: float | None = None

    def failed(self, error: CliError) -> None:
        """Wait before the next try, or raise ``error`` when the budget is spent."""
        now = time.monotonic()
        if self._away_since is None:
            self._away_since = now
        delay = min(self.first_delay * 2**self.failures, MAX_DELAY_SECONDS)
        self.failures += 1
        if now + delay - self._away_since > RECONNECT_SECONDS:
            raise error
        time.sleep(delay)

    def succeeded(self) -> None:
        self.failures = 0
        self._away_since = None


class RunFollower:
    """The events of one run, until it is DONE or ERROR (``events()``)."""

    def __init__(self, api: ApiClient, run_id: str) -> None:
        self.api = api
        self.run_id = run_id
        self._backoff = Backoff()
        self._last_event_id: str | None = None
        self._answered = False

    def events(self) -> Iterator[RunEvent]:
        try:
            yield from self._stream()
        except EventsRouteMissing as missing:
            yield from self._poll(missing.status)

    def _stream(self) -> Iterator[RunEvent]:
        while True:
            try:
                for event in self._connect():
                    self._backoff.succeeded()
                    yield event
                    if event.name in FINAL_EVENTS:
                        return
                closed = httpx.RemoteProtocolError("the events stream closed before the run ended")
                raise Retryable(self.api.unreachable(closed))
            except httpx.TransportError as err:
                if not self._answered:
                    raise self.api.unreachable(err) from None
                self._backoff.failed(self.api.unreachable(err))
            except Retryable as retry:
                self._backoff.failed(retry.error)

    def _connect(self) -> Iterator[RunEvent]:
        """The events of one connection, after the last event seen."""
        headers = {"Last-Event-ID": self._last_event_id} if self._last_event_id else {}
        path = run_path(self.run_id, "events")
        with connect_sse(
            self.api.http, "GET", path, headers=headers, timeout=STREAM_READ_TIMEOUT
        ) as source:
            response = source.response
            self._answered = True
            if response.status_code != 200:
                response.read()
                raise self._refused(response)
            if "text/event-stream" not in response.headers.get("content-type", ""):
                raise self.api.not_our_api(response)
            for sse in source.iter_sse():
                if sse.id:
                    self._last_event_id = sse.id
                if sse.retry is not None:
                    self._backoff.first_delay = min(sse.retry / 1000, MAX_DELAY_SECONDS)
                if sse.event not in STREAM_EVENTS:
                    continue  # the opening `retry:`, or an event a newer API added
                try:
                    data = json.loads(sse.data)
                except ValueError:
                    raise self.api.not_our_api(response) from None
                yield RunEvent(sse.event, RunStatus.of(data))

    def _refused(self, response: httpx.Response) -> Exception:
        """What an answer other than the stream means: fall back, retry, or give up."""
        if response.status_code == 204:
            # The run ended with the last event seen: its status says how.
            return EventsRouteMissing(RunStatus.of(self.api.status(self.run_id)))
        if response.status_code == 404:
            # 404 for an unknown run, or for the route of an API without it: the status says
            # (and raises the run's own 404).
            return EventsRouteMissing(RunStatus.of(self.api.status(self.run_id)))
        error = self.api.refusal(response, not_found=self.api.no_such_run(self.run_id))
        return Retryable(error) if response.status_code >= 500 else error

    def _poll(self, first: RunStatus) -> Iterator[RunEvent]:
        previous: RunStatus | None = None
        current = first
        while True:
            for name in transitions(previous, current):
                yield RunEvent(name, current)
            if current.is_final:
                return
            previous = current
            running = current.state == "RUNNING"
            current = self._next_status(RUNNING_POLL_SECONDS if running else LONG_POLL_SECONDS)

    def _next_status(self, wait: float) -> RunStatus:
        """The run's status after a long poll, tried again while the API is away."""
        while True:
            try:
                status = RunStatus.of(self.api.status(self.run_id, wait=wait))
            except CliError as err:
                if err.code != ExitCode.UNAVAILABLE:
                    raise
                self._backoff.failed(err)
                continue
            self._backoff.succeeded()
            return status
