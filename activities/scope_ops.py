"""What a scope's coordinator asks of the Temporal server: the deployment's settings, what holds
each slot when it starts afresh, when an execution on a slot closes (and how), and the removal of
a squatter on a slot's id. Calls to Temporal, nothing else."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio import activity
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowQueryFailedError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from agent_runner.contract import (
    ADOPT_PREDECESSOR,
    CARRY,
    READ_SETTINGS,
    REMOVE_SQUATTER,
    RUN_WORKFLOW,
    SETTINGS_MEMO,
    SURVEY_SLOTS,
    WATCH_EXECUTION,
    DeploymentSettings,
    ExecutionClosed,
    ExecutionRef,
    RunOutcome,
    RunPhase,
    RunPolicy,
    RunState,
    SlotFinding,
    SlotHolder,
    SlotState,
    SlotSurvey,
)
from agent_runner.executions import CLEAN_CLOSES, close_event, drain_lease, outcome_of
from agent_runner.ids import Scope, place_of
from agent_runner.validation import parse_as
from workflows.scope_book import ScopeBook, ScopeState

# One long poll of an execution's close event; the activity heartbeats between polls.
_WATCH_POLL = timedelta(seconds=10)


@activity.defn(name=READ_SETTINGS)
async def read_settings(workflow_id: str) -> DeploymentSettings | None:
    description = await _describe(activity.client(), workflow_id)
    if description is None:
        return None
    memo = await description.memo()
    if SETTINGS_MEMO not in memo:
        return None
    settings: DeploymentSettings = parse_as(DeploymentSettings, memo[SETTINGS_MEMO], "settings")
    return settings


@activity.defn(name=SURVEY_SLOTS)
async def survey_slots(survey: SlotSurvey) -> list[SlotFinding]:
    place = place_of(survey.scope_id)
    assert place is not None, survey.scope_id
    client = activity.client()
    return list(
        await asyncio.gather(*(_finding(client, place.scope, slot) for slot in range(survey.slots)))
    )


async def _finding(client: Client, scope: Scope, slot: int) -> SlotFinding:
    description = await _describe(client, scope.slot_id(slot))
    if description is None:
        return SlotFinding(slot, SlotState.FREE)
    memo = await description.memo()
    floor = memo.get("fence_base")
    fence_floor = floor if isinstance(floor, int) and not isinstance(floor, bool) else 0
    if description.status == WorkflowExecutionStatus.RUNNING:
        holder = memo.get("run_id")
        return SlotFinding(
            slot,
            SlotState.FOREIGN,
            description.run_id,
            fence_floor=fence_floor,
            holder_run_id=holder if isinstance(holder, str) else None,
        )
    if description.status in CLEAN_CLOSES or description.close_time is None:
        return SlotFinding(slot, SlotState.FREE, fence_floor=fence_floor)
    free_at = description.close_time + timedelta(seconds=drain_lease(memo))
    if free_at <= datetime.now(UTC):
        return SlotFinding(slot, SlotState.FREE, fence_floor=fence_floor)
    return SlotFinding(slot, SlotState.DRAINING, free_at=free_at, fence_floor=fence_floor)


@activity.defn(name=ADOPT_PREDECESSOR)
async def adopt_predecessor(scope_id: str) -> object:
    """:func:`_adopt_predecessor`, heartbeating every second while it asks: its coordinator
    waits on it before it answers any start, so a task the server handed to a worker that was
    then cut off is tried again on another after the heartbeat timeout (5 s), not after the
    whole 30 s a slow replay of the predecessor may take (chaos seed 70913: a scope answered
    nothing for 31 s after its coordinator was terminated, and its starts got 503)."""
    work = asyncio.ensure_future(_adopt_predecessor(scope_id))
    try:
        while True:
            done, _ = await asyncio.wait({work}, timeout=1.0)
            if done:
                return work.result()
            activity.heartbeat()
    finally:
        work.cancel()


async def _adopt_predecessor(scope_id: str) -> object:
    """What the coordinator before this one carried, when it was ended from outside
    (terminated, timed out, failed): asked of its closed execution (a query replays it), so its
    successor loses no queued run, key or record. None when the one before closed by itself
    (it had nothing to hand on) or there was none.

    One that was ended before its first workflow task decided nothing: what it was handed is
    what it carried. If it was started afresh it took over nothing, and the one before it is
    asked instead (chaos seed 52973: a coordinator terminated 11 s after its predecessor, before
    its first task, and its successor started afresh without the queue both had been handed)."""
    client = activity.client()
    query = f"WorkflowId = '{scope_id}' AND ExecutionStatus != 'Running'"
    # Newest first.
    async for execution in client.list_workflows(query, limit=_LOOK_BACK):
        if execution.status not in _ENDED_FROM_OUTSIDE:
            return None
        handle = client.get_workflow_handle(scope_id, run_id=execution.run_id)
        try:
            carried: object = await handle.query(CARRY)
        except (RPCError, WorkflowQueryFailedError) as err:
            # A query its own code failed (its history does not replay on it) is refused for
            # good as well.
            refused = isinstance(err, WorkflowQueryFailedError) or _NEVER_RAN in err.message
            if not refused and not any(reason in err.message for reason in _UNASKABLE):
                raise
            # The server refuses for good (its last workflow task failed, so its history does
            # not replay; or it was ended before its first task): asking again would hold the
            # scope for ever. What it was handed is in its history, without a replay.
            handed = await _handed_to(client, scope_id, execution.run_id)
            if handed is _NOTHING_TAKEN:
                continue  # it took nothing over: the one before it still holds the queue
            if handed is _UNREADABLE:
                raise ApplicationError(
                    f"the coordinator before this one ({execution.run_id}) cannot be asked "
                    f"what it carried: {err.message}",
                    non_retryable=True,
                ) from err
            return handed
        return carried
    return None


# What _handed_to answers for an execution that adopted nothing yet, and for one whose history
# says nothing it can read.
_NOTHING_TAKEN = object()
_UNREADABLE = object()


async def _handed_to(client: Client, scope_id: str, run_id: str) -> object:
    """What a coordinator that can no longer be asked was handed when it began, read from its
    history: the state the execution before it continued as new with (the server says it
    continued one), or what it adopted itself (_NOTHING_TAKEN if it adopted nothing yet).

    Found by the randomized run (seed 91807): a coordinator continued as new 2 s after the server
    restarted; the server handed its worker an admit it had already accepted, and the history no
    longer replayed. Its successor could not ask it, started afresh, and the queue it had been
    handed was lost. What it decided itself after it began (admits it answered before its
    workflow tasks failed) cannot be read without a replay: that is lost still, and logged."""
    handle = client.get_workflow_handle(scope_id, run_id=run_id)
    try:
        history = await handle.fetch_history()
    except RPCError:
        return _UNREADABLE
    converter = client.data_converter.payload_converter
    events = history.events
    started = events[0].workflow_execution_started_event_attributes if events else None
    if started is None:
        return _UNREADABLE
    answered = sum(
        1
        for event in events
        if event.HasField("workflow_execution_update_completed_event_attributes")
    )
    handed: object = _NOTHING_TAKEN
    if started.continued_execution_run_id and started.input.payloads:
        handed = converter.from_payload(started.input.payloads[0])
    else:
        adoptions = {
            event.event_id
            for event in events
            if event.activity_task_scheduled_event_attributes.activity_type.name
            == ADOPT_PREDECESSOR
        }
        for event in events:
            done = event.activity_task_completed_event_attributes
            if event.HasField("activity_task_completed_event_attributes") and (
                done.scheduled_event_id in adoptions
            ):
                payloads = done.result.payloads
                handed = converter.from_payload(payloads[0]) if payloads else None
                break
    runs = 0
    if handed is not _NOTHING_TAKEN and handed is not None:
        handed, runs = await _with_runs_it_started(client, scope_id, handed, events)
    if handed is not _NOTHING_TAKEN and answered:
        activity.logger.error(
            "coordinator_predecessor_read_from_history",
            extra={
                "scope": scope_id,
                "predecessor": run_id,
                "updates_it_completed": answered,
                "runs_it_started": runs,
                "lost": "the admits and cancels it answered itself, if any",
            },
        )
    return handed


async def _with_runs_it_started(
    client: Client, scope_id: str, handed: object, events: Any
) -> tuple[object, int]:
    """``handed`` squared with the runs the coordinator that can no longer be asked started
    itself, which its history records (each child start), and with the executions its own
    survey found: a run it was handed queued or granted, then started and saw end, is ended
    with its outcome; one still running holds its slot (the successor's survey finds it there
    and watches it). And how many runs it started.

    Found by the randomized run (seed 17, in the suite): the SDK ordered an admit and a child's
    end otherwise on replay than on first run, so the coordinator's tasks failed; its successor
    took over the queue it had been handed, in which three runs it had since run to the end
    were still waiting, and ran them a second time."""
    place = place_of(scope_id)
    if place is None:
        return handed, 0
    starts, surveyed = _what_it_started(client, place.scope, events)
    if not starts and not surveyed:
        return handed, 0
    try:
        state = parse_as(ScopeState, handed, "a predecessor's state")
    except (ValueError, TypeError):
        return handed, len(starts)  # not a state this code can square: handed on as it is
    book = ScopeBook(place.scope, state, RunPolicy())
    for run_id, execution in surveyed.items():
        entry = book.entry(run_id)
        if entry is not None and entry.phase == RunPhase.GRANTED and not entry.temporal_run_id:
            book.started(run_id, execution[1])
    executions = {run: (place.scope.slot_id(slot), exe) for slot, run, exe in book.held() if exe}
    for start in starts:
        if book.took_slot(start.run_id, start.slot, start.fence, start.execution, start.at):
            executions[start.run_id] = (start.workflow_id, start.execution)
    ends = await _ends(client, set(executions.values()))
    now = datetime.now(UTC)
    for run_id, execution in executions.items():
        entry = book.entry(run_id)
        ended = ends.get(execution)
        if ended is not None and entry is not None and entry.phase != RunPhase.ENDED:
            at = ended[0].finished_at or now
            book.closed_before(run_id, ended[0], clean=ended[1], now=at)
    return book.carried(), len(starts)


@dataclass(frozen=True)
class _Start:
    """A run's workflow a coordinator started on a slot (its history's child start)."""

    run_id: str
    workflow_id: str
    slot: int
    fence: int
    execution: str
    at: datetime


def _what_it_started(
    client: Client, scope: Scope, events: Any
) -> tuple[list[_Start], dict[str, tuple[str, str]]]:
    """From a coordinator's history: the runs' workflows it started, in order, and the
    executions of our runs its start-up survey found on the slots (run id: slot's workflow id,
    execution)."""
    converter = client.data_converter.payload_converter
    begun: dict[int, tuple[str, str, int, int]] = {}
    starts: list[_Start] = []
    surveys: set[int] = set()
    surveyed: dict[str, tuple[str, str]] = {}
    for event in events:
        if event.HasField("start_child_workflow_execution_initiated_event_attributes"):
            child = event.start_child_workflow_execution_initiated_event_attributes
            slot_place = place_of(child.workflow_id)
            if slot_place is None or slot_place.slot is None or not child.input.payloads:
                continue
            given = converter.from_payload(child.input.payloads[0])
            if isinstance(given, dict) and isinstance(given.get("run_id"), str):
                fence = given.get("fence_base")
                begun[event.event_id] = (
                    given["run_id"],
                    child.workflow_id,
                    slot_place.slot,
                    fence if isinstance(fence, int) else 0,
                )
        elif event.HasField("child_workflow_execution_started_event_attributes"):
            started = event.child_workflow_execution_started_event_attributes
            if started.initiated_event_id in begun:
                run_id, workflow_id, slot, fence = begun[started.initiated_event_id]
                at = event.event_time.ToDatetime(tzinfo=UTC)
                execution = started.workflow_execution.run_id
                starts.append(_Start(run_id, workflow_id, slot, fence, execution, at))
        elif event.activity_task_scheduled_event_attributes.activity_type.name == SURVEY_SLOTS:
            surveys.add(event.event_id)
        elif event.HasField("activity_task_completed_event_attributes"):
            done = event.activity_task_completed_event_attributes
            if done.scheduled_event_id in surveys and done.result.payloads:
                raw = converter.from_payload(done.result.payloads[0])
                for item in raw if isinstance(raw, list) else []:
                    try:
                        finding = parse_as(SlotFinding, item, "a survey's finding")
                    except (ValueError, TypeError):
                        continue
                    if finding.holder_run_id and finding.run_id:
                        where = (scope.slot_id(finding.slot), finding.run_id)
                        surveyed[finding.holder_run_id] = where
    return starts, surveyed


# How many executions one take-over looks up at once.
_LOOKUPS = 8


async def _ends(
    client: Client, executions: set[tuple[str, str]]
) -> dict[tuple[str, str], tuple[RunOutcome, bool]]:
    """How each of ``executions`` (workflow id, run id) ended, and whether cleanly; one still
    running is left out. One gone from the namespace ended as the watcher says ("gone")."""
    gate = asyncio.Semaphore(_LOOKUPS)

    async def end_of(execution: tuple[str, str]) -> tuple[RunOutcome, bool] | None:
        handle = client.get_workflow_handle(execution[0], run_id=execution[1])
        async with gate:
            try:
                description = await handle.describe()
                if description.status == WorkflowExecutionStatus.RUNNING:
                    return None
                event = await close_event(handle)
            except RPCError as err:
                if err.status != RPCStatusCode.NOT_FOUND:
                    raise
                return RunOutcome(RunState.ERROR, error="gone"), True
            except LookupError:
                return None
            try:
                outcome = await outcome_of(client, event)
            except (ValueError, TypeError) as err:  # a result that is not a run's
                outcome = RunOutcome(RunState.ERROR, error=f"closed: {err}"[:200])
            return outcome, description.status in CLEAN_CLOSES

    found = await asyncio.gather(*(end_of(execution) for execution in executions))
    return {
        execution: ended
        for execution, ended in zip(executions, found, strict=True)
        if ended is not None
    }


# What the server answers, for good, a query of a closed execution it cannot replay.
_UNASKABLE = ("failed state",)
# ... and of one that was closed before its first workflow task (it never ran).
_NEVER_RAN = "closed before WorkflowTaskStarted"
# How many closed executions, newest first, one start-up looks through for the last that ran.
_LOOK_BACK = 20
_ENDED_FROM_OUTSIDE = {
    WorkflowExecutionStatus.CANCELED,
    WorkflowExecutionStatus.TERMINATED,
    WorkflowExecutionStatus.TIMED_OUT,
    WorkflowExecutionStatus.FAILED,
}


@activity.defn(name=WATCH_EXECUTION)
async def watch_execution(ref: ExecutionRef) -> ExecutionClosed:
    """Wait until the execution closes; how it closed."""
    client = activity.client()
    handle = client.get_workflow_handle(ref.workflow_id, run_id=ref.run_id)
    while True:
        activity.heartbeat()
        try:
            event = await close_event(handle, wait=True, rpc_timeout=_WATCH_POLL)
            description = await handle.describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:  # gone from the namespace long ago
                return ExecutionClosed(True, RunOutcome(RunState.ERROR, error="gone"), 0.0)
            continue
        except LookupError:
            continue
        memo = await description.memo()
        clean = description.status in CLEAN_CLOSES
        return ExecutionClosed(clean, await outcome_of(client, event), drain_lease(memo))


@activity.defn(name=REMOVE_SQUATTER)
async def remove_squatter(holder: SlotHolder) -> ExecutionRef | None:
    """The open execution holding a slot's id, if any. One of another type, or on another task
    queue, can never run an agent and may never end: it is terminated (and None returned)."""
    client = activity.client()
    description = await _describe(client, holder.workflow_id)
    if description is None or description.status != WorkflowExecutionStatus.RUNNING:
        return None
    ours = description.workflow_type == RUN_WORKFLOW and description.task_queue == holder.task_queue
    if ours:
        return ExecutionRef(holder.workflow_id, description.run_id)
    activity.logger.warning(
        "squatter_terminated",
        extra={"workflow_id": holder.workflow_id, "workflow_type": description.workflow_type},
    )
    with contextlib.suppress(RPCError):
        await client.get_workflow_handle(holder.workflow_id, run_id=description.run_id).terminate(
            f"not an agent-runner run ({description.workflow_type} on {description.task_queue}) "
            "holding a slot's id"
        )
    return None


async def _describe(client: Client, workflow_id: str) -> WorkflowExecutionDescription | None:
    try:
        return await client.get_workflow_handle(workflow_id).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


SCOPE_ACTIVITIES: list[Callable[..., Any]] = [
    adopt_predecessor,
    read_settings,
    survey_slots,
    watch_execution,
    remove_squatter,
]
