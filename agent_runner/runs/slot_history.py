"""A run's status as its slot execution's history unfolds, one event at a time: the events of its
status stream once it holds a slot (see :mod:`agent_runner.runs.follow`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

from agent_runner.models import AGENT_EVENT_SIGNAL, AgentEvent, AgentEventKind
from agent_runner.runs.slot_status import closed_run_status, handed_over_status
from agent_runner.runs.types import (
    WAITING_PREVIOUS_AGENT,
    WAITING_WORKER,
    AttemptFailure,
    Progress,
    RunState,
    RunStatus,
)

# The names of the stream's events.
QUEUED, PENDING, RUNNING, PROGRESS = "queued", "pending", "running", "progress"
ATTEMPT_FAILED, DONE, ERROR = "attempt_failed", "done", "error"


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
        return await closed_run_status(client, base, event, self._outcome)
