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
from dataclasses import replace
from datetime import timedelta

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryRequest
from temporalio.client import Client

from agent_runner.locations import QueuedRun
from agent_runner.runs.slot_history import ERROR, QUEUED, RunEvent, SlotHistory
from agent_runner.runs.status import get_run_status, locate
from agent_runner.runs.types import (
    RunState,
    RunStatus,
    RunTarget,
)

# A history page shorter than this holds everything recorded so far.
PAGE_SIZE = 256
# The server answers a history long poll after at most about 20 s.
LONG_POLL_TIMEOUT = timedelta(seconds=40)


class CaughtUp:
    """Marks that every change recorded so far has been yielded: the last event is current."""


CAUGHT_UP = CaughtUp()


def is_after(event_id: str, last_id: str | None) -> bool:
    """Whether the event ``event_id`` comes after ``last_id`` in a run's stream (True for an
    id this service never gave out: such a client gets the whole stream again)."""
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
