"""Following a run as it changes: the events of its status stream.

Every event is derived from Temporal's history alone, so any API replica derives the same events
with the same ids, and a client that reconnects anywhere with ``Last-Event-ID`` continues where
it left off. While a run waits in a queue its events are its queue positions (ids ``q<position>``,
which only fall); once it holds a slot they follow its slot execution's history (ids are the
history event ids that caused them):

- the start (``pending``), the agent's activity scheduled (``pending``, waiting for a worker),
  a wait for the previous agent on the slot (``pending``, from the memo);
- the attempts' own signals (:class:`~agent_runner.models.AgentEvent`): ``running`` when an
  attempt starts (Temporal records ActivityTaskStarted only when an attempt ends), ``progress``,
  ``attempt_failed``;
- the close event: ``done`` or ``error``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, timedelta

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryRequest
from temporalio.client import Client

from agent_runner.locations import QueuedRun
from agent_runner.models import AGENT_EVENT_SIGNAL, AgentEvent, AgentEventKind
from agent_runner.runs.status import (
    closed_run_status,
    get_run_status,
    handed_over_status,
    locate,
)
from agent_runner.runs.types import (
    WAITING_PREVIOUS_AGENT,
    WAITING_WORKER,
    AttemptFailure,
    Progress,
    RunState,
    RunStatus,
    RunTarget,
)

QUEUED, PENDING, RUNNING, PROGRESS = "queued", "pending", "running", "progress"
ATTEMPT_FAILED, DONE, ERROR = "attempt_failed", "done", "error"
# A history page shorter than this holds everything recorded so far.
PAGE_SIZE = 256
# The server answers a history long poll after at most about 20 s.
LONG_POLL_TIMEOUT = timedelta(seconds=40)
_CLOSE_EVENTS = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
}


@dataclass(frozen=True)
class RunEvent:
    id: str
    name: str
    status: RunStatus


class CaughtUp:
    """Marks that every change recorded so far has been yielded: the last event is current."""


CAUGHT_UP = CaughtUp()


def is_after(event_id: str, last_id: str | None) -> bool:
    """Whether the event ``event_id`` comes after ``last_id`` in a run's stream (True for an
    unknown ``last_id``: the client gets the stream from where it is now)."""
    last = _order(last_id) if last_id is not None else None
    return last is None or _order(event_id) > last  # type: ignore[operator]


def _order(event_id: str) -> tuple[int, int] | None:
    """Queue events first, by falling position; then slot events by history event id."""
    try:
        if event_id.startswith("q"):
            return (0, -int(event_id[1:]))
        return (1, int(event_id))
    except ValueError:
        return None


async def follow_run(
    client: Client, target: RunTarget, run_id: str
) -> AsyncIterator[RunEvent | CaughtUp]:
    """The run's events from its first, until its final one. Raises
    :class:`~agent_runner.runs.errors.RunNotFoundError` for an unknown run."""
    ref = locate(target, run_id)
    status = await get_run_status(client, run_id, target=target)
    queue_id = ref.scope.queue_id if isinstance(ref, QueuedRun) else None
    # Where the queue's history was read up to: (its Temporal run id, the next page token).
    read_up_to: tuple[str, bytes] | None = None
    while status.workflow_id == queue_id and not status.is_final:
        if status.queue_position is not None:
            yield RunEvent(f"q{status.queue_position}", QUEUED, status)
        yield CAUGHT_UP
        assert status.workflow_id is not None
        assert status.temporal_run_id is not None
        if read_up_to is None or read_up_to[0] != status.temporal_run_id:
            # Read to the end, then the status again: a change recorded meanwhile is not missed.
            token = await _end_of_history(client, status.workflow_id, status.temporal_run_id)
        else:
            token = await _next_events(client, status.workflow_id, read_up_to)
        read_up_to = (status.temporal_run_id, token)
        status = await get_run_status(client, run_id, target=target)
    if status.workflow_id == queue_id:
        # Ended in the queue (cancelled there, or the queue was stopped).
        yield RunEvent("q0", ERROR, status)
        return
    async for item in _follow_slot(client, status):
        yield item


async def _end_of_history(client: Client, workflow_id: str, run_id: str) -> bytes:
    """The page token that continues after everything the execution has recorded so far."""
    caught_up, token = False, b""
    while not caught_up:
        _, caught_up, token = await _page(client, workflow_id, run_id, token)
        if not token:
            break
    return token


async def _next_events(client: Client, workflow_id: str, read_up_to: tuple[str, bytes]) -> bytes:
    """Wait (one long poll) for what the execution records next; the token after it."""
    run_id, token = read_up_to
    if not token:
        return token  # it has closed: nothing more will come
    _, _, token = await _page(client, workflow_id, run_id, token)
    return token


async def _follow_slot(client: Client, first: RunStatus) -> AsyncIterator[RunEvent | CaughtUp]:
    assert first.workflow_id is not None
    assert first.temporal_run_id is not None
    history = SlotHistory(
        replace(
            first,
            state=RunState.PENDING,
            result=None,
            error=None,
            attempt=0,
            finished_at=None,
            progress=None,
            last_failure=None,
            waiting_for=None,
        )
    )
    async for events, caught_up in _pages(client, first.workflow_id, first.temporal_run_id):
        for event in events:
            derived = await history.apply(client, event)
            if derived is not None:
                yield derived
        if history.closed:
            return
        if caught_up:
            yield CAUGHT_UP


async def _pages(
    client: Client, workflow_id: str, run_id: str
) -> AsyncIterator[tuple[list[HistoryEvent], bool]]:
    """Pages of the execution's history, then long polls for what it records next, until it
    closes: (events, whether they reach the end of what is recorded)."""
    token = b""
    while True:
        events, caught_up, token = await _page(client, workflow_id, run_id, token)
        yield events, caught_up
        if not token:
            return


async def _page(
    client: Client, workflow_id: str, run_id: str, token: bytes
) -> tuple[list[HistoryEvent], bool, bytes]:
    """One page (a long poll past the end): its events, whether they reach the end of what is
    recorded, and the token of the next page (empty once the execution has closed)."""
    response = await client.workflow_service.get_workflow_execution_history(
        GetWorkflowExecutionHistoryRequest(
            namespace=client.namespace,
            execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id),
            maximum_page_size=PAGE_SIZE,
            next_page_token=token,
            wait_new_event=True,
            skip_archival=True,
        ),
        retry=True,
        timeout=LONG_POLL_TIMEOUT,
    )
    events = list(response.history.events)
    return events, len(events) < PAGE_SIZE, response.next_page_token


class SlotHistory:
    """The run's status as its slot execution's history unfolds, one event at a time."""

    def __init__(self, base: RunStatus) -> None:
        self.status = base
        self.closed = False
        self._outcome: object = None

    async def apply(self, client: Client, event: HistoryEvent) -> RunEvent | None:
        kind = event.event_type
        if kind in _CLOSE_EVENTS:
            self.closed = True
            final = await self._final(client, event)
            return RunEvent(
                str(event.event_id), DONE if final.state == RunState.DONE else ERROR, final
            )
        changed = await self._changed(client, event)
        if changed is None:
            return None
        name, status = changed
        if status == self.status and kind != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            return None
        self.status = status
        return RunEvent(str(event.event_id), name, status)

    async def _changed(self, client: Client, event: HistoryEvent) -> tuple[str, RunStatus] | None:
        status = self.status
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            return PENDING, status
        if kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED and status.attempt == 0:
            return PENDING, replace(status, waiting_for=WAITING_WORKER)
        if kind == EventType.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED:
            return await self._memo_changed(client, event)
        if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            attributes = event.workflow_execution_signaled_event_attributes
            if attributes.signal_name != AGENT_EVENT_SIGNAL:
                return None
            try:
                [reported] = await client.data_converter.decode(
                    attributes.input.payloads, [AgentEvent]
                )
            except Exception:
                return None  # a signal of that name from someone else
            return self._reported(reported)
        return None

    async def _memo_changed(
        self, client: Client, event: HistoryEvent
    ) -> tuple[str, RunStatus] | None:
        fields = event.workflow_properties_modified_event_attributes.upserted_memo.fields
        values = await client.data_converter.decode(list(fields.values()))
        memo = dict(zip(fields, values, strict=True))
        self._outcome = memo.get("outcome", self._outcome)
        status = self.status
        if isinstance(memo.get("agent_type"), str) and isinstance(memo.get("user_id"), str):
            # A run started by another system says who it works for once its workflow has read
            # its input.
            status = replace(status, agent_type=memo["agent_type"], user_id=memo["user_id"])
        if "waiting_until" in memo and status.state == RunState.PENDING:
            status = replace(
                status, waiting_for=WAITING_PREVIOUS_AGENT if memo["waiting_until"] else None
            )
        return (PENDING if status.state == RunState.PENDING else RUNNING), status

    def _reported(self, event: AgentEvent) -> tuple[str, RunStatus] | None:
        status = self.status
        if event.attempt < status.attempt:
            return None  # a late report of an earlier attempt
        if event.kind == AgentEventKind.ATTEMPT_STARTED or event.attempt > status.attempt:
            failure = status.last_failure
            if event.attempt > 1 and (failure is None or failure.attempt < event.attempt - 1):
                # The attempt before did not report its end: it timed out or its worker died.
                failure = AttemptFailure(
                    event.attempt - 1,
                    "the attempt stopped answering (heartbeat timeout: its worker may have died)",
                    retrying=True,
                )
            status = replace(
                status,
                state=RunState.RUNNING,
                attempt=event.attempt,
                progress=None,
                waiting_for=None,
                last_failure=failure,
            )
            if event.kind == AgentEventKind.ATTEMPT_STARTED:
                return RUNNING, status
        if event.kind == AgentEventKind.PROGRESS and event.fraction is not None:
            progress = Progress(event.fraction, event.message or "", event.attempt)
            return PROGRESS, replace(status, progress=progress)
        if event.kind == AgentEventKind.ATTEMPT_FAILED:
            failure = AttemptFailure(event.attempt, event.reason or "", event.retrying)
            return ATTEMPT_FAILED, replace(status, last_failure=failure, progress=None)
        return None

    async def _final(self, client: Client, event: HistoryEvent) -> RunStatus:
        base = replace(self.status, progress=None, waiting_for=None)
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
            closed = replace(base, finished_at=event.event_time.ToDatetime(tzinfo=UTC))
            return handed_over_status(closed, self._outcome)
        return await closed_run_status(client, base, event)
