"""Following a run as it changes: the events of its status stream.

Every event is derived from Temporal alone, so any API replica derives the same events with the
same ids, and a client that reconnects anywhere with ``Last-Event-ID`` continues where it left
off. While the run waits (its coordinator holds it) its events carry ``q<n>``, ``n`` the scope's
queue version when the run was seen so: it grows with every change of the queue, so a position
may rise and fall and the ids still only grow. Once its workflow runs on a slot, the events
follow that execution's history (ids: the ids of the history events that caused them). Each
event's name is the change between two statuses (:func:`agent_runner.status.event_name`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryRequest
from temporalio.client import Client
from temporalio.service import RPCError

from agent_runner.contract import RunRecord
from agent_runner.executions import ExecutionHistory
from agent_runner.ids import RunRef
from agent_runner.runs.errors import RunNotFoundError, TemporalUnavailableError
from agent_runner.runs.service import Runs
from agent_runner.status import ExecutionView, RunStatus, event_name, run_status

# A history page shorter than this holds everything recorded so far.
PAGE_SIZE = 256
# The server answers a history long poll after at most about 20 s.
LONG_POLL_TIMEOUT = timedelta(seconds=40)
# How often a waiting run's coordinator is looked at for a change (one describe, server only).
COORDINATOR_POLL = timedelta(milliseconds=250)
# An event id: ``q<n>`` while the run waits, then a history event's id (an int64: 18 digits at
# most here), in canonical decimal (no sign, no leading zero).
EVENT_ID_PATTERN = r"q(?:0|[1-9][0-9]{0,17})|[1-9][0-9]{0,17}"
_EVENT_ID = re.compile(EVENT_ID_PATTERN)


@dataclass(frozen=True)
class RunEvent:
    id: str
    name: str
    status: RunStatus


class CaughtUp:
    """Marks that every change recorded so far has been yielded: the last event is current."""


CAUGHT_UP = CaughtUp()


class Behind:
    """Marks that something changed that has not been yielded yet: the last event is no longer
    current until the next :class:`CaughtUp` (a read of a busy coordinator can take seconds, and
    a status read must not answer the old state meanwhile)."""


BEHIND = Behind()
Followed = RunEvent | CaughtUp | Behind


def event_order(event_id: str) -> tuple[int, int] | None:
    """Where an event id sits in a run's stream: queue events first (by queue version), then
    the execution's (by history event id); None for text that is not an id of ours."""
    if _EVENT_ID.fullmatch(event_id) is None:
        return None
    if event_id.startswith("q"):
        return (0, int(event_id[1:]))
    return (1, int(event_id))


async def follow_run(runs: Runs, run_id: str) -> AsyncIterator[Followed]:
    """The run's events from its first, until its final one. Raises
    :class:`~agent_runner.runs.errors.RunNotFoundError` for an unknown run."""
    ref = runs.locate(run_id)
    record = await runs.record(ref)
    last: RunStatus | None = None
    while record is not None and record.outcome is None and not record.temporal_run_id:
        status = run_status(ref.run_id, record, None)
        assert status is not None
        name = event_name(last, status)
        if name is not None:
            yield RunEvent(f"q{record.queue_version}", name, status)
            last = status
        yield CAUGHT_UP
        await _coordinator_changed(runs, ref)
        yield BEHIND
        record = await runs.record(ref)
    if record is not None and not record.temporal_run_id:
        status = run_status(ref.run_id, record, None)  # it ended without a slot
        assert status is not None
        yield RunEvent(f"q{record.queue_version}", str(event_name(last, status)), status)
        return
    where = await _execution(runs, ref, record)
    async for item in _follow_execution(runs.client, ref, record, where, last):
        if isinstance(item, RunEvent) and item.status.is_final:
            # Tell the end once the slot is free, as a status read does.
            with contextlib.suppress(RPCError, TemporalUnavailableError):
                await runs.slot_freed(ref, await runs.record(ref))
        yield item


async def _execution(runs: Runs, ref: RunRef, record: RunRecord | None) -> ExecutionView:
    if record is not None and record.workflow_id and record.temporal_run_id:
        return ExecutionView(record.workflow_id, record.temporal_run_id)
    found = await runs.execution_of(ref, None)
    if found is None:
        raise RunNotFoundError(ref.run_id)
    return ExecutionView(found.workflow_id, found.temporal_run_id)


async def _coordinator_changed(runs: Runs, ref: RunRef) -> None:
    """Return once the run's coordinator has recorded anything new (or after a while)."""
    handle = runs.client.get_workflow_handle(ref.scope.id)
    first = (await handle.describe(rpc_timeout=runs.target.rpc_timeout)).history_length
    for _ in range(int(20 / COORDINATOR_POLL.total_seconds())):
        await asyncio.sleep(COORDINATOR_POLL.total_seconds())
        description = await handle.describe(rpc_timeout=runs.target.rpc_timeout)
        if description.history_length != first or description.run_id != handle.run_id:
            return


async def _follow_execution(
    client: Client,
    ref: RunRef,
    record: RunRecord | None,
    where: ExecutionView,
    last: RunStatus | None,
) -> AsyncIterator[Followed]:
    history = ExecutionHistory(client, where)
    token = b""
    while True:
        events, caught_up, token = await _page(client, where, token)
        if events:
            yield BEHIND
        for event in events:
            view = await history.apply(event)
            status = run_status(ref.run_id, record, view)
            assert status is not None
            name = event_name(last, status)
            if name is not None:
                yield RunEvent(str(event.event_id), name, status)
                last = status
        if history.closed:
            return
        if caught_up:
            yield CAUGHT_UP


async def _page(
    client: Client, where: ExecutionView, token: bytes
) -> tuple[list[HistoryEvent], bool, bytes]:
    """One page (a long poll past the end): its events, whether they reach the end of what is
    recorded, and the token of the next page."""
    response = await client.workflow_service.get_workflow_execution_history(
        GetWorkflowExecutionHistoryRequest(
            namespace=client.namespace,
            execution=WorkflowExecution(
                workflow_id=where.workflow_id, run_id=where.temporal_run_id
            ),
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
