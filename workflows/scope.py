"""AgentScopeWorkflow: the coordinator of one scope, and the only place its decisions are made.

Its workflow id is the scope's id (:mod:`agent_runner.ids`). Every start of a run in the scope,
from the API or any other client, is an update to it (``admit``, sent with update-with-start);
so are cancels. It decides with :class:`workflows.scope_book.ScopeBook`, one message at a time,
and starts each granted run as a child workflow on the granted slot's fixed id. The server's
uniqueness of that id stays the mutex under every decision: a bug here could delay runs, never
put two on one slot.

It learns how each run ended from the server (the child's close), and for runs it inherited
across continue-as-new or found on its slots when it started afresh, from an activity that
waits for their close. It reads N from the deployment's settings record, never from its input:
an input is trusted only when the server says this execution continued an earlier one.

It cannot be cancelled (a cancel request is logged and ignored: terminate it to stop its
queue); it continues as new when its history grows, and closes once it has nothing to hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.api.common.v1 import Payload
from temporalio.common import RawValue, RetryPolicy, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    TerminatedError,
    WorkflowAlreadyStartedError,
)

from workflows.scope_book import Grant, ScopeBook, ScopeState

with workflow.unsafe.imports_passed_through():
    from agent_runner import search_attributes
    from agent_runner.contract import (
        ADMIT,
        ADMIT_EXPIRED,
        ADOPT_PREDECESSOR,
        CANCEL,
        CARRY,
        LIMITS_CHANGED,
        READ_SETTINGS,
        REMOVE_SQUATTER,
        RUN_WORKFLOW,
        RUNS,
        SETTINGS_FRESH,
        SURVEY_SLOTS,
        VIEW,
        WATCH_EXECUTION,
        Admission,
        AdmitAnswer,
        AdmitRequest,
        AgentRunResult,
        CancelAnswer,
        DeploymentSettings,
        ErrorType,
        ExecutionClosed,
        ExecutionRef,
        FailureDetails,
        RunOutcome,
        RunPolicy,
        RunRecord,
        RunState,
        ScopeView,
        SlotFinding,
        SlotHolder,
        SlotRunInput,
        SlotSurvey,
        ViewRequest,
    )
    from agent_runner.ids import RunRef, Scope, place_of, settings_id
    from agent_runner.lease import run_bound_seconds
    from agent_runner.validation import InvalidRunInputError, parse_as

T = TypeVar("T")
# A run's agent may wait this long for a worker that has it (then that attempt fails).
WORKER_WAIT = timedelta(minutes=5)
# The patch after which the loop grants with an admit's read younger than SETTINGS_FRESH.
SHARED_READS_PATCH = "loop-uses-admit-reads"
# The patch that passes carried cancels on again (histories from before it replay as they ran).
RESEND_CANCELS = "resend-carried-cancels"
# The patch after which the coordinator's start-up reads (the settings record, its predecessor,
# its slots) are local activities, run by the worker inside its first workflow task rather than
# scheduled through the server as tasks of their own, and an admit decides with the start-up
# read while it is fresh: a new scope's first answer took four workflow tasks and three activity
# tasks, most of a start's time under load; now one. Only ``run`` starts local activities, before
# any handler may go on, see "Workflow code and replay" in docs/design.md.
# Decided once per execution, in its first task, so an execution never mixes the two ways.
LOCAL_READS_PATCH = "local-reads"
# The patch after which an execution takes every patch above at its first moment, before any
# read, and starts no local activity: its start-up reads are ordinary activities again. Under a
# busy core, the SDK sometimes completed the workflow task that recorded a local activity's
# result before the workflow saw that result, and ran the code after it in the next task; replay
# runs that code in the task that recorded it. A patch first asked there was missing on replay,
# and an update that arrived in the next task was then handled after that code, not before it:
# either way the history no longer replayed, the scope's workflow tasks failed, and an API
# replaced its coordinator, whose successor could not replay it either to take over its queue
# (found by tests/test_queue.py and by chaos seed 35759).
PATCHES_FIRST = "no-local-activities"
# The patch, asked at an execution's first moment like PATCHES_FIRST, after which
# - what it carries is kept within a byte budget (see ScopeBook's ``budgeted``): before it, a
#   busy scope's continue-as-new input could pass Temporal's 2 MB limit (1,000 ended records
#   and 1,000 waiting runs weigh about 2.4 MB); and
# - an admit decides with any read of the settings that came back and began within
#   SETTINGS_FRESH and after the latest LIMITS_CHANGED, rather than always with a read of its
#   own: an admit was about ten history events, so a busy coordinator continued as new every few
#   seconds, and a start meeting it on its way out could run out of its budget (chaos seed 83339).
BUDGET_PATCH = "carried-budget-and-shared-admit-reads"
# The patch, asked at an execution's first moment after BUDGET_PATCH, after which whether a
# read of the settings is still fresh is decided by a timer, not by comparing workflow.now()
# with when the read began. A worker that takes over an execution (its cache missed: the worker
# before it died, or was cut off) may run the first task after one that answered an update with
# the time of the task before (Temporal's Python SDK 1.35); replay has the right time. So a
# read looked fresh on first run and stale on replay: the loop granted without reading where
# replay read first, and the history no longer replayed (the suite's short chaos run, twice).
# A timer's firing is an event in the history: first run and replay see it at the same point.
FRESH_TIMER_PATCH = "settings-freshness-by-timer"
# The patch, asked at an execution's first moment after FRESH_TIMER_PATCH, after which each
# priority's fair shares are a round-robin of its own (ScopeBook's ``rank_clocks``: a pass per
# key and priority, and a clock per priority): a key that begins to wait again takes its turns
# from where its priority's service has got to. Before it, runs waiting at a lower priority held
# the one clock back, and a key back after a moment with nothing queued took the turns another
# key had been granted meanwhile (chaos seed 93151: eleven in a row).
RANK_CLOCKS_PATCH = "fair-clock-per-priority"
# The patch, asked at an execution's first moment after RANK_CLOCKS_PATCH (or by the first
# admit, should one come before that moment), after which an admit's answer hangs only on its
# history, never on workflow.now():
# - an admit come past its ``not_after`` is refused by its validator, by the real clock (a
#   validator runs on first run only, and a refused update leaves nothing in the history);
# - one taken in is late only when it is a question asked again after a lost answer (answered
#   from memory, or EXPIRED), when a timer to its ``not_after`` has fired while it waited on a
#   read (an event of the history), or when an EXPIRED was given meanwhile to the same try of
#   the same request (its question); never by the clock of the task it goes on in; and
# - a run's id comes from its request id and the execution's id, not from a sequence, so a
#   request decided otherwise cannot shift the ids of the requests after it.
# A worker's first run of a task may see the time of the task before it (Temporal's Python SDK
# 1.35, see FRESH_TIMER_PATCH); replay sees the right one. Chaos seed 68891: after a server
# restart, two admits read the settings and were decided in the next task, in time by the clock
# the worker saw (16.73 s, before their not_after of 16.96 s) and answered QUEUED; the replay
# saw that task's time (17.66 s), decided one EXPIRED and minted no id, and every later run id
# in the replayed state went to the request after the one it was answered to: a run granted
# twice, a run lost, a run DONE with no agent. No command differed, so nothing flagged it.
ADMIT_BY_HISTORY = "admit-decided-by-history"
# The namespace of run ids minted from request ids (ADMIT_BY_HISTORY).
_RUN_IDS = uuid.UUID("6f1c1e5e-7d0a-4c39-9a53-2b8f0e4d7a11")
_QUICK = timedelta(seconds=10)
# Reads an admit makes at most to decide with fresh limits (FRESH_TIMER_PATCH).
_ADMIT_READS = 3
# A settings read is one describe call; one the server handed to a worker that was then cut off
# waits this long, not _QUICK, before another worker reads instead (every admit waits on one).
_READ = timedelta(seconds=5)
_QUICK_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=2))
_ONCE = RetryPolicy(maximum_attempts=1)
_SHOWN_IN_DETAILS = 20
# A start with no input (every start but a continue-as-new's).
NO_INPUT = RawValue(Payload())


@workflow.defn(name="AgentScopeWorkflow", failure_exception_types=[InvalidRunInputError, TypeError])
class AgentScopeWorkflow:
    def __init__(self) -> None:
        self._book: ScopeBook | None = None
        self._settings: DeploymentSettings | None = None
        self._ready = False
        self._dirty = True
        self._starting: set[str] = set()
        self._watching: set[str] = set()
        self._published: tuple[int, int] | None = None
        # What the Web UI's current details last showed (a pause changes them, not the queue).
        self._details: tuple[object, ...] | None = None
        # When the loop last started a read of the settings of its own.
        self._loop_read_at: datetime | None = None
        # When the latest read that came back began (the loop's or an admit's).
        self._read_at: datetime | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Whether it took PATCHES_FIRST, and whether its start-up reads are local activities
        # (LOCAL_READS_PATCH), decided in ``run``; and when its start-up read of the settings
        # began.
        self._patches_first = False
        # Whether it took BUDGET_PATCH (decided in ``run``), and when it was last told the
        # limits changed.
        self._budgeted = False
        self._changed_at: datetime | None = None
        # Since FRESH_TIMER_PATCH: whether a read came back that began after the latest
        # LIMITS_CHANGED, whose SETTINGS_FRESH has not run out (a timer says when it has); how
        # many such reads came back; and how many LIMITS_CHANGED signals came.
        self._timed_fresh = False
        # Since RANK_CLOCKS_PATCH (decided in ``run``): fair shares keep a clock per priority.
        self._rank_clocks = False
        # Since ADMIT_BY_HISTORY (decided in ``run``, or by an admit before it): admits decide
        # by their history (see the patch); the admits waiting on a read, by request id; the
        # run ids minted per request id.
        self._by_history = False
        self._awaiting: dict[str, list[_Judged]] = {}
        self._minted: dict[str, int] = {}
        self._fresh = False
        self._fresh_reads = 0
        self._changes = 0
        self._fresh_timer = False
        self._local_reads = False
        self._startup_read_at: datetime | None = None
        # Told the limits changed (LIMITS_CHANGED): the loop reads them before it grants again.
        self._limits_changed = False
        self._waited = workflow.metric_meter().create_histogram_float(
            "agent_runner_queue_wait_seconds", "Time runs waited in a queue for a slot.", "s"
        )

    # --- messages -------------------------------------------------------------------------------

    @workflow.update(name=ADMIT.name)
    async def admit(self, requests: list[AdmitRequest]) -> list[AdmitAnswer]:
        """Start, queue or refuse each request, in order."""
        # The first task of an execution runs the admit of an update-with-start before ``run``,
        # which asks its patches and makes its book in one step.
        asked = self._book is not None
        if self._by_history if asked else workflow.patched(ADMIT_BY_HISTORY):
            return await self._admit_by_history(requests)
        book = await self._ready_book()
        if self._budgeted:
            # Every read whose result came in with this update has been taken in first (the
            # SDK may resume the two in either order, see _load_settings), so the choice below
            # is the same on first run and on replay. The read is used, never awaited.
            await workflow.wait_condition(lambda: True)
            if self._timed_fresh:
                # A read that began before a change's signal leaves them stale: read again
                # (a few times at most, should changes keep coming; it then decides as held).
                for _ in range(_ADMIT_READS):
                    if self._fresh:
                        break
                    await self._load_settings()
            elif self._read_stale():
                await self._load_settings()
        elif not self._startup_read_fresh():
            # A read of its own, started now, so the bound it decides with is fresh; never one
            # another handler started (see _load_settings). Since LOCAL_READS_PATCH, the
            # start-up read serves while it is fresh: it was done before any handler could go
            # on, so every handler finds it done, on first run and on replay alike.
            await self._load_settings()
        now = workflow.now()
        answers = [book.admit(request, now, self._new_run_id) for request in requests]
        for run_id in book.take_stops():  # runs a replace cancelled: passed on, not awaited
            self._spawn(self._stop(run_id))
        self._dirty = True
        return answers

    @admit.validator
    def _check_admit(self, requests: list[AdmitRequest]) -> None:
        """Refuse an admit come past its ``not_after``: its caller gave up, and nothing of it
        is taken in. A validator runs on first run only, so the real clock is safe here, and is
        the one the caller's deadline was set by: workflow.now() may be the time of the task
        before (see ADMIT_BY_HISTORY). Taken in past it all the same: a question, and a request
        answered already or being decided (an API from before the ``question`` field asks again
        with the try's own request, and gets its answer so)."""
        with workflow.unsafe.sandbox_unrestricted():
            now = datetime.now(UTC)
        for request in requests:
            if request.not_after is not None and request.not_after.tzinfo is None:
                # From another client (the temporal CLI): refused with a clear reason, not a
                # TypeError from the comparison below.
                raise InvalidRunInputError(
                    "not_after must be an ISO time with a UTC offset "
                    f"(got {request.not_after.isoformat()})"
                )
            if request.question or request.not_after is None or now <= request.not_after:
                continue
            book = self._book
            known = book is not None and self._ready and book.answered(request)
            if not known and request.request_id not in self._awaiting:
                raise ApplicationError(
                    f"the start came after its caller gave up (not_after "
                    f"{request.not_after.isoformat()}): nothing was taken in",
                    type=ADMIT_EXPIRED,
                    non_retryable=True,
                )

    async def _admit_by_history(self, requests: list[AdmitRequest]) -> list[AdmitAnswer]:
        """Since ADMIT_BY_HISTORY: an admit whose answer hangs on its history only."""
        judged = _Judged(requests)
        for request_id in judged.ids:
            self._awaiting.setdefault(request_id, []).append(judged)
        try:
            if not self._ready:
                judged.start_timer()
            book = await self._ready_book()
            # Every read whose result came in with this update is taken in first (see admit).
            await workflow.wait_condition(lambda: True)
            if not judged.all_late():  # a late one is answered from memory, or EXPIRED
                for _ in range(_ADMIT_READS):
                    if self._fresh:
                        break
                    judged.start_timer()
                    await self._load_settings()
            now = workflow.now()
            answers: list[AdmitAnswer] = []
            for request in requests:
                answer = book.admit(
                    request,
                    now,
                    functools.partial(self._mint, request.request_id),
                    late=request.request_id in judged.late,
                )
                if answer.admission is Admission.EXPIRED:
                    # Decided as not made: the same try of the same request, still waiting on
                    # a read (where this is its question), is not made either.
                    for other in self._awaiting.get(request.request_id, []):
                        other.withdraw(request)
                answers.append(answer)
            for run_id in book.take_stops():  # runs a replace cancelled: passed on, not awaited
                self._spawn(self._stop(run_id))
            self._dirty = True
            return answers
        finally:
            judged.stop_timer()
            for request_id in judged.ids:
                waiting = self._awaiting.get(request_id, [])
                if judged in waiting:
                    waiting.remove(judged)
                if not waiting:
                    self._awaiting.pop(request_id, None)

    @workflow.update(name=CANCEL.name)
    async def cancel(self, run_id: str) -> CancelAnswer:
        """Take a waiting run out of the queue, or pass the cancel on to a granted run's
        workflow (whose agent stops within moments)."""
        book = await self._ready_book()
        answer, stop = book.cancel(run_id, workflow.now())
        if stop:
            # Passed on without waiting: the handler ends in the task it began in.
            self._spawn(self._stop(run_id))
        self._dirty = True
        return answer

    @workflow.signal(name=LIMITS_CHANGED)
    def limits_changed(self) -> None:
        """The limits changed (an API's PUT, a pause, a resume): read them now, so a raised N
        or a resume grants the waiting runs at once, not at the scope's next event."""
        self._limits_changed = True
        self._changed_at = workflow.now()
        self._changes += 1
        self._set_fresh(False)
        self._dirty = True

    @workflow.query(name=RUNS.name)
    def runs(self, run_ids: list[str]) -> list[RunRecord]:
        if self._book is None:
            raise NotReadyError("the coordinator is starting: ask again in a moment")
        now = workflow.now()
        return [record for run_id in run_ids[:1000] if (record := self._book.record(run_id, now))]

    @workflow.query(name=CARRY)
    def carry(self) -> ScopeState:
        """Everything it carries (a successor's take-over of a coordinator ended from outside
        asks a closed execution this)."""
        if self._book is None:
            raise NotReadyError("the coordinator is starting: ask again in a moment")
        return self._book.carried()

    @workflow.query(name=VIEW.name)
    def view(self, request: ViewRequest) -> ScopeView:
        if self._book is None:
            raise NotReadyError("the coordinator is starting: ask again in a moment")
        return self._book.view(request.offset, min(request.limit, 1000), workflow.now())

    # --- the loop -------------------------------------------------------------------------------

    @workflow.run
    async def run(self, carried: RawValue = NO_INPUT) -> None:
        # First, before any read: an execution that began before a patch replays without it
        # to its end (a patch first asked later could answer differently on replay).
        self._patches_first = workflow.patched(PATCHES_FIRST)
        self._local_reads = not self._patches_first and workflow.patched(LOCAL_READS_PATCH)
        self._budgeted = self._patches_first and workflow.patched(BUDGET_PATCH)
        self._timed_fresh = self._budgeted and workflow.patched(FRESH_TIMER_PATCH)
        self._rank_clocks = self._timed_fresh and workflow.patched(RANK_CLOCKS_PATCH)
        self._by_history = self._rank_clocks and workflow.patched(ADMIT_BY_HISTORY)
        scope = _own_scope()
        state = _carried_state(carried)
        # Known from its first moment, so its queries always answer: what the execution before
        # carried over, or nothing (a coordinator starting afresh knows no run yet).
        self._book = self._new_book(scope, state or ScopeState())
        self._set_fresh(self._fresh)  # nothing is granted before the start-up read (the patch)
        settings = await self._despite_cancel(self._read_settings)
        if settings.scope_kind != scope.kind:
            raise InvalidRunInputError(
                f"{scope.id} is not a scope of this deployment, whose scopes are "
                f"{settings.scope_kind.value}"
            )
        self._book.limits = settings.limits_for(scope.label)
        if state is None:
            # Both asked at once (one round trip, not two); the survey is squared with what
            # was adopted, as it was found.
            taken_over, findings = await self._despite_cancel(
                lambda: asyncio.gather(self._predecessor(scope), self._slots(scope, settings))
            )
            self._adopt(scope, taken_over)
            self._book.survey(findings, workflow.now())
        self._ready = True
        for slot, run_id, temporal_run_id in self._book.held():
            if temporal_run_id is not None:  # inherited from the execution before
                self._watch_run(run_id, scope.slot_id(slot), temporal_run_id)
                self._stop_again(run_id)
        for slot, foreign_run_id in self._book.foreign():
            self._watch_foreign(slot, scope.slot_id(slot), foreign_run_id)
        while True:
            await self._despite_cancel(self._step)
            if self._patches_first:
                # Let every handler that can go on in this activation go on first: whether
                # one is still running decides below, and the SDK may resume the step and a
                # handler (both waiting on results that came in one task) in one order on first
                # run and in the other on replay (chaos seed 52973: a coordinator continued as
                # new on replay where it had started a timer).
                await workflow.wait_condition(lambda: True)
            if self._book.empty() and self._quiet():
                return
            if workflow.info().is_continue_as_new_suggested() and self._quiet():
                workflow.continue_as_new(self._book.carried())

    async def _step(self) -> None:
        book = self._book
        assert book is not None
        wakeup = book.next_wakeup()
        timeout = (wakeup - workflow.now()).total_seconds() if wakeup else None
        fired = False
        if self._timed_fresh and timeout is not None:
            # Since FRESH_TIMER_PATCH, whether it waits does not hang on workflow.now() (a
            # worker that took the coordinator over may see the time of the task before, see
            # the patch): it always waits, at least a moment, and the timer that fires is an
            # event of the history, so what came due by then is due on replay too.
            timeout = max(timeout, 0.001)
        if timeout is None or timeout > 0:
            try:
                await workflow.wait_condition(
                    lambda: self._dirty or self._may_end(), timeout=timeout
                )
            except TimeoutError:  # the book changes by itself then
                fired = True
        self._dirty = False
        now = workflow.now()
        if fired and wakeup is not None and self._timed_fresh:
            now = max(now, wakeup)
        waiting = book.to_start() or book.queue_length
        if waiting and (self._limits_changed or self._settings_stale(now)):
            self._limits_changed = False
            self._loop_read_at = now
            await self._load_settings()
            now = max(now, workflow.now()) if self._timed_fresh else workflow.now()
        book.expire(now)
        for grant in book.to_start():
            if grant.run_id not in self._starting:
                self._starting.add(grant.run_id)
                self._spawn(self._hold(grant))
        self._publish()

    def _settings_stale(self, now: datetime) -> bool:
        """Whether the loop reads the record again before it grants: when no read of its own
        began within SETTINGS_FRESH, and (since the patch) no read at all did: an admit's read
        that has come back is as fresh as one of the loop's (it is not awaited, only used)."""
        if self._timed_fresh:
            return not self._fresh
        if self._loop_read_at is not None and now - self._loop_read_at < SETTINGS_FRESH:
            return False
        if not self._since(SHARED_READS_PATCH):
            return True
        return self._read_at is None or now - self._read_at >= SETTINGS_FRESH

    def _since(self, patch: str) -> bool:
        """Whether this execution runs the code of ``patch``: every one since PATCHES_FIRST;
        before it, asked where it always was (so the histories from then replay as they ran)."""
        return self._patches_first or workflow.patched(patch)

    def _may_end(self) -> bool:
        book = self._book
        assert book is not None
        suggested = workflow.info().is_continue_as_new_suggested()
        return (book.empty() or suggested) and self._quiet()

    def _quiet(self) -> bool:
        """No message being handled, no start in flight: safe to close or continue as new."""
        return workflow.all_handlers_finished() and not self._starting

    # --- slots ----------------------------------------------------------------------------------

    async def _hold(self, grant: Grant) -> None:
        """Start the granted run on its slot, then follow it until it closes."""
        book, scope = self._book, _own_scope()
        assert book is not None
        slot_id = scope.slot_id(grant.slot)
        if grant.queued_at is not None:
            waited = (workflow.now() - grant.queued_at).total_seconds()
            self._waited.record(max(0.0, waited), {"scope_kind": scope.kind.value})
        policy = grant.request.policy or _POLICY
        try:
            handle = await workflow.start_child_workflow(
                RUN_WORKFLOW,
                SlotRunInput(
                    run_id=grant.run_id,
                    agent_type=grant.request.agent_type,
                    user_id=grant.request.user_id,
                    policy=policy,
                    params=grant.request.params,
                    fence_base=grant.fence_base,
                    idempotency_key=grant.idempotency_key,
                    queued_at=grant.queued_at,
                    worker_wait_seconds=WORKER_WAIT.total_seconds(),
                ),
                id=slot_id,
                task_queue=workflow.info().task_queue,
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                execution_timeout=timedelta(
                    seconds=run_bound_seconds(
                        max_attempts=policy.max_attempts,
                        timeout_seconds=policy.timeout_seconds,
                        heartbeat_timeout_seconds=policy.heartbeat_timeout_seconds,
                        retry_initial_interval_seconds=policy.retry_initial_interval_seconds,
                        worker_wait_seconds=WORKER_WAIT.total_seconds(),
                    )
                ),
                memo={
                    "run_id": grant.run_id,
                    "agent_type": grant.request.agent_type,
                    "user_id": grant.request.user_id,
                    "fence_base": grant.fence_base,
                    "heartbeat_timeout_seconds": policy.heartbeat_timeout_seconds,
                },
                search_attributes=_run_attributes(grant),
                static_summary=f"{grant.request.agent_type} for {grant.request.user_id}",
            )
        except WorkflowAlreadyStartedError:
            self._starting.discard(grant.run_id)
            entry = book.entry(grant.run_id)
            # Said in the log (the run's record forgets the grant: it waits again, first in
            # line), so whoever checks the service order knows when it was served first.
            workflow.logger.warning(
                "slot_taken_by_another_execution",
                extra={
                    "run_id": grant.run_id,
                    "agent_type": grant.request.agent_type,
                    "user_id": grant.request.user_id,
                    "slot_workflow_id": slot_id,
                    "granted_at": entry.granted_at.isoformat()
                    if entry and entry.granted_at
                    else None,
                },
            )
            book.refused(grant.run_id, None, workflow.now())
            self._watch_foreign(grant.slot, slot_id, None)
            self._dirty = True
            return
        self._starting.discard(grant.run_id)
        temporal_run_id = handle.first_execution_run_id or ""
        if book.started(grant.run_id, temporal_run_id):
            await self._stop(grant.run_id)
        self._dirty = True
        try:
            result = await handle
        except ChildWorkflowError as err:
            outcome, clean = _outcome_of(err)
        else:
            outcome, clean = _done(result), True
        book.closed(grant.run_id, outcome, clean=clean, now=workflow.now())
        self._dirty = True

    def _watch_run(self, run_id: str, workflow_id: str, temporal_run_id: str) -> None:
        """A run of ours this execution did not start (inherited): wait for it to close."""
        book = self._book
        assert book is not None

        async def watch() -> None:
            closed = await self._closed(ExecutionRef(workflow_id, temporal_run_id))
            book.closed(run_id, closed.outcome, clean=closed.clean, now=workflow.now())
            self._dirty = True

        self._spawn(watch())

    def _watch_foreign(self, slot: int, workflow_id: str, run_id: str | None) -> None:
        """An execution we did not start holds a slot's id: our own kind ends at once by
        itself; any other is removed. Either way the slot is free once it has closed."""
        if workflow_id in self._watching:
            return
        self._watching.add(workflow_id)
        book = self._book
        assert book is not None

        async def watch() -> None:
            holder: ExecutionRef | None = await _checked_activity(
                REMOVE_SQUATTER,
                SlotHolder(workflow_id, workflow.info().task_queue),
                ExecutionRef | None,
                start_to_close_timeout=_QUICK,
                retry_policy=_QUICK_RETRY,
            )
            closed = ExecutionClosed(True, RunOutcome(RunState.ERROR), 0.0)
            if holder is not None:
                closed = await self._closed(holder)
            self._watching.discard(workflow_id)
            book.foreign_closed(
                slot, clean=closed.clean, lease=closed.lease_seconds, now=workflow.now()
            )
            self._dirty = True

        self._spawn(watch())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _closed(self, ref: ExecutionRef) -> ExecutionClosed:
        closed: ExecutionClosed = await _checked_activity(
            WATCH_EXECUTION,
            ref,
            ExecutionClosed,
            start_to_close_timeout=timedelta(days=3650),
            heartbeat_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=5)),
        )
        return closed

    def _stop_again(self, run_id: str) -> None:
        """Pass on again a cancel the execution before accepted: its request to the run may
        have been initiated in the task that continued as new, and the server drops such a
        request with its initiator (found by `make bench`: a run cancelled 0.1 s after its
        start, answered "stopping", worked on for its whole timeout and was retried). Asking a
        run to cancel twice changes nothing."""
        entry = self._book.entry(run_id) if self._book else None
        if entry is None or not entry.cancel_requested or not self._since(RESEND_CANCELS):
            return
        self._spawn(self._stop(run_id))

    async def _stop(self, run_id: str) -> None:
        """Pass a cancel on to a granted run's workflow."""
        book = self._book
        assert book is not None
        entry = book.entry(run_id)
        if entry is None or entry.slot is None or not entry.temporal_run_id:
            return
        handle = workflow.get_external_workflow_handle(
            _own_scope().slot_id(entry.slot), run_id=entry.temporal_run_id
        )
        with contextlib.suppress(ApplicationError):  # it closed meanwhile: its close tells
            await handle.cancel()

    # --- startup and settings ---------------------------------------------------------------------

    async def _despite_cancel(self, step: Callable[[], Awaitable[T]]) -> T:
        """A step of the start-up or of the loop, done again when a cancel of the coordinator cut
        it short (also while it waited on an activity): a coordinator ignores cancels (terminate
        it to stop its queue), and one that ended cancelled would leave its queue to nobody."""
        while True:
            try:
                return await step()
            except (asyncio.CancelledError, CancelledError):
                pass
            except ActivityError as err:
                if not isinstance(err.cause, CancelledError):
                    raise
            workflow.logger.warning(
                "coordinator_cancel_ignored",
                extra={"scope": _own_scope().id, "reason": "terminate it to stop its queue"},
            )

    async def _ready_book(self) -> ScopeBook:
        await workflow.wait_condition(lambda: self._ready)
        assert self._book is not None
        return self._book

    def _read_stale(self) -> bool:
        """Whether no read that came back began within SETTINGS_FRESH and after the limits
        were last said to change (an admit then reads before it decides)."""
        read_at, changed_at = self._read_at, self._changed_at
        if read_at is None or workflow.now() - read_at >= SETTINGS_FRESH:
            return True
        return changed_at is not None and read_at < changed_at

    def _startup_read_fresh(self) -> bool:
        began = self._startup_read_at
        return began is not None and workflow.now() - began < SETTINGS_FRESH

    async def _read_settings(self) -> DeploymentSettings:
        """The deployment's settings record, read at start-up; the coordinator cannot work
        without one."""
        await self._load_settings(startup=True)
        if self._local_reads and self._settings is not None:
            self._startup_read_at = self._read_at
        if self._settings is None:
            raise InvalidRunInputError(
                f"no deployment settings at {settings_id(_own_scope().base)}: start an API or "
                "a worker of this deployment first"
            )
        return self._settings

    async def _load_settings(self, *, startup: bool = False) -> None:
        """One read of the deployment's record, awaited only by whoever started it.

        Never shared: a read's result can arrive in the same workflow task as an update, and
        Temporal's SDK may hand the two to the workflow in one order when it runs and in the
        other when it replays (temporalio/sdk-python#673, #1591). A handler that waited on a
        read another one started would then end in one task on first run and in another on
        replay, a history that no longer replays (found by the randomized run)."""
        began, changes = workflow.now(), self._changes
        found: DeploymentSettings | None = await self._read(
            READ_SETTINGS,
            settings_id(_own_scope().base),
            DeploymentSettings | None,
            _READ,
            local=startup,
        )
        if found is not None:
            self._settings = found
            self._read_at = max(began, self._read_at) if self._read_at else began
            if self._book is not None:
                self._book.limits = found.limits_for(_own_scope().label)
            if self._timed_fresh and changes == self._changes:
                self._fresh_reads += 1
                self._set_fresh(True)
                if not self._fresh_timer:
                    self._fresh_timer = True
                    self._spawn(self._expire_freshness())

    async def _expire_freshness(self) -> None:
        """Mark the settings stale SETTINGS_FRESH after the latest fresh read began, by a timer
        (see FRESH_TIMER_PATCH): while reads keep coming back, it waits again for the newest.
        Only the timers' lengths use workflow.now(); a timer that runs a little long or short
        does not change what the history records."""
        while True:
            seen = self._fresh_reads
            left = self._read_at + SETTINGS_FRESH - workflow.now() if self._read_at else None
            await workflow.sleep(max(0.01, left.total_seconds() if left else 0.0))
            if self._fresh_reads == seen:
                break
        self._fresh_timer = False
        self._set_fresh(False)

    def _set_fresh(self, fresh: bool) -> None:
        """Whether the limits it holds are fresh (since FRESH_TIMER_PATCH): while they are
        not, its book gives no slot, so a slot freed meanwhile goes by the limits a new read
        brings."""
        self._fresh = fresh
        if self._timed_fresh and self._book is not None:
            self._book.hold_grants = not fresh

    async def _predecessor(self, scope: Scope) -> object:
        """Starting afresh: what a coordinator ended from outside carried (None if nothing)."""
        try:
            raw: RawValue = await self._read(
                ADOPT_PREDECESSOR,
                scope.id,
                RawValue,
                timedelta(seconds=30),
                local=True,
                heartbeat=timedelta(seconds=5),
            )
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):
                raise  # a cancel of the coordinator: asked again (see _despite_cancel)
            # Its predecessor cannot be asked (its history no longer replays): start afresh
            # rather than never; what holds the slots is still found by the survey.
            workflow.logger.error(
                "coordinator_predecessor_unreadable",
                extra={"scope": scope.id, "error": str(err.cause)},
            )
            return None
        return workflow.payload_converter().from_payload(raw.payload)

    def _new_book(self, scope: Scope, state: ScopeState) -> ScopeBook:
        """A book of this execution's code (the patches it took)."""
        return ScopeBook(
            scope, state, _POLICY, budgeted=self._budgeted, rank_clocks=self._rank_clocks
        )

    def _adopt(self, scope: Scope, carried: object) -> None:
        """Take over what the predecessor carried."""
        if carried is None:
            return
        state: ScopeState = parse_as(ScopeState, carried, "a predecessor's state")
        limits = self._book.limits if self._book else state.limits
        self._book = self._new_book(scope, replace(state, limits=limits))
        self._set_fresh(self._fresh)
        workflow.logger.warning(
            "coordinator_adopted",
            extra={"scope": scope.id, "queued": self._book.queue_length},
        )

    async def _slots(self, scope: Scope, settings: DeploymentSettings) -> list[SlotFinding]:
        """Starting afresh: what holds each slot this deployment ever used, from the server."""
        findings: list[SlotFinding] = await self._read(
            SURVEY_SLOTS,
            SlotSurvey(
                scope.id,
                max(settings.slots_high_water, settings.limits_for(scope.label).slots),
                workflow.info().task_queue,
            ),
            list[SlotFinding],
            _QUICK,
            local=True,
        )
        return findings

    async def _read(
        self,
        name: str,
        arg: object,
        kind: Any,
        timeout: timedelta,
        *,
        local: bool = False,
        heartbeat: timedelta | None = None,
    ) -> Any:
        """One of the coordinator's reads; a start-up one (``local``, only ever from ``run``)
        is a local activity since LOCAL_READS_PATCH, tried once: one that fails is asked again
        as an ordinary activity. The workflow's clock counts a local activity's last try only,
        not the tries and pauses before it; with one try it stays close to the server's, which
        is what ``not_after`` and SETTINGS_FRESH are measured against."""
        if local and self._local_reads:
            try:
                return await workflow.execute_local_activity(
                    name, arg, result_type=kind, start_to_close_timeout=timeout,
                    retry_policy=_ONCE,
                )  # fmt: skip
            except ActivityError as err:
                if isinstance(err.cause, CancelledError):
                    raise  # a cancel of the coordinator: asked again (see _despite_cancel)
        return await workflow.execute_activity(
            name,
            arg,
            result_type=kind,
            start_to_close_timeout=timeout,
            heartbeat_timeout=heartbeat,
            retry_policy=_QUICK_RETRY,
        )

    def _new_run_id(self) -> str:
        """A run id that names its scope (see :mod:`agent_runner.ids`)."""
        return RunRef(_own_scope(), str(workflow.uuid4())).run_id

    def _mint(self, request_id: str) -> str:
        """Since ADMIT_BY_HISTORY: the run id of a request, the same whichever requests were
        decided before it, and never one minted before (the execution's id is in it, and a
        request id minted again in one execution, its answer forgotten, is counted)."""
        count = self._minted.get(request_id, 0)
        self._minted[request_id] = count + 1
        name = f"{workflow.info().run_id}/{request_id}/{count}"
        return RunRef(_own_scope(), str(uuid.uuid5(_RUN_IDS, name))).run_id

    # --- where people look ----------------------------------------------------------------------

    def _publish(self) -> None:
        """The queue's depth (a search attribute) and the Web UI's current details."""
        book = self._book
        assert book is not None
        shown = (book.queue_version, book.busy_slots())
        details = (shown, book.limits.slots, book.limits.paused, book.limits.fair_shares)
        if details == self._details:
            return
        self._details = details
        if shown != self._published:
            self._published = shown
            workflow.upsert_search_attributes(
                [
                    search_attributes.QUEUE_DEPTH.value_set(book.queue_length),
                    search_attributes.SLOTS_BUSY.value_set(book.busy_slots()),
                ]
            )
        view = book.view(0, _SHOWN_IN_DETAILS)
        slots = "\n".join(
            f"- slot {slot.slot}: {slot.state.value}"
            + (f" by `{slot.run_id}`" if slot.run_id else "")
            + (f" until {slot.free_at:%H:%M:%S} UTC" if slot.free_at else "")
            for slot in view.slots
        )
        queued = "\n".join(
            f"{record.queue_position}. {record.agent_type} for {record.user_id} "
            f"(`{record.run_id}`, priority {record.priority}"
            + (f", key `{record.fairness_key}`" if record.fairness_key else "")
            + f", since {record.accepted_at:%H:%M:%S} UTC"
            + (
                f", expires {record.queue_expires_at:%Y-%m-%d %H:%M:%S} UTC"
                if record.queue_expires_at
                else ""
            )
            + ")"
            for record in view.queued
        )
        more = view.queue_length - len(view.queued)
        order = "priority, then first come" + (
            ", fair shares by key" if view.limits.fair_shares else ""
        )
        paused = " **paused**: it queues, and grants nothing until resumed"
        workflow.set_current_details(
            f"**{view.limits.slots} slot(s)** of `{view.scope_id}` (served by {order})"
            + (paused if view.limits.paused else "")
            + f"\n\n{slots}\n\n**{view.queue_length} run(s) waiting**"
            + (f"\n\n{queued}" if queued else "")
            + (f"\n\n... and {more} more" if more > 0 else "")
        )


_POLICY = RunPolicy()


async def _checked_activity(name: str, arg: object, kind: Any, **options: Any) -> Any:
    """An activity's result as ``kind``. Another client can complete or fail any activity
    (`temporal activity complete`): an answer that is not ``kind``, or a failure, is not the
    activity's own, and it is run again (a bad payload must never fail the workflow task)."""
    while True:
        try:
            raw: RawValue = await workflow.execute_activity(
                name, arg, result_type=RawValue, **options
            )
            return parse_as(kind, workflow.payload_converter().from_payload(raw.payload), name)
        except (ActivityError, InvalidRunInputError, ValueError, TypeError) as err:
            workflow.logger.warning(
                "activity_answer_refused", extra={"activity": name, "reason": str(err)[:200]}
            )
        await workflow.sleep(1.0)


class _Judged:
    """Which of an admit's requests are late (ADMIT_BY_HISTORY), by what the history records
    only: a question; a timer to the earliest ``not_after`` that fired while the admit waited;
    an EXPIRED given meanwhile to the same try of the same request."""

    def __init__(self, requests: list[AdmitRequest]) -> None:
        self.ids = [request.request_id for request in requests]
        self.late = {request.request_id for request in requests if request.question}
        self._due = [request for request in requests if request.not_after is not None]
        self._timer: asyncio.TimerHandle | None = None
        self._started = False

    def withdraw(self, expired: AdmitRequest) -> None:
        """``expired`` was answered EXPIRED: so is this admit's request of the same id, every
        try of it if it has no key (its id is its caller's own: an earlier try still held, the
        update of a later try with the same update id having been joined to it), else the same
        try (the same ``not_after``: another caller's start with the same key is its own)."""
        if any(
            request.request_id == expired.request_id
            and (expired.idempotency_key is None or request.not_after == expired.not_after)
            for request in self._due
        ):
            self.late.add(expired.request_id)

    def all_late(self) -> bool:
        return all(request_id in self.late for request_id in self.ids)

    def start_timer(self) -> None:
        """Before the admit waits past this task: a timer to the earliest ``not_after``."""
        waiting = [request for request in self._due if request.request_id not in self.late]
        if self._started or not waiting:
            return
        self._started = True
        earliest = min(request.not_after for request in waiting if request.not_after)
        left = max(0.001, (earliest - workflow.now()).total_seconds())
        self._timer = asyncio.get_running_loop().call_later(left, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self.late.update(request.request_id for request in self._due)

    def stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class NotReadyError(RuntimeError):
    """A query before the coordinator knows its book (it reads its settings first)."""


def _own_scope() -> Scope:
    place = place_of(workflow.info().workflow_id)
    if place is None or place.slot is not None:
        raise InvalidRunInputError(
            f"{workflow.info().workflow_id!r} is not a scope's id: a coordinator's id is its "
            "scope's (<base>, <base>:user:<uuid> or <base>:type:<agent type>)"
        )
    return place.scope


def _carried_state(carried: RawValue) -> ScopeState | None:
    """What the execution before handed on, trusted only when the server says this execution
    continued one (a client's start cannot say so)."""
    if carried is NO_INPUT or workflow.info().continued_run_id is None:
        return None
    try:
        raw = workflow.payload_converter().from_payload(carried.payload)
    except Exception:
        return None
    state: ScopeState = parse_as(ScopeState, raw, "carried state")
    return state


def _run_attributes(grant: Grant) -> TypedSearchAttributes:
    pairs = [
        SearchAttributePair(search_attributes.AGENT_TYPE, grant.request.agent_type),
        SearchAttributePair(search_attributes.USER_ID, grant.request.user_id),
        SearchAttributePair(search_attributes.AGENT_RUN_ID, grant.run_id),
    ]
    if grant.idempotency_key is not None:
        pairs.append(SearchAttributePair(search_attributes.IDEMPOTENCY_KEY, grant.idempotency_key))
    return TypedSearchAttributes(pairs)


def _done(result: object) -> RunOutcome:
    attempt = result.attempt if isinstance(result, AgentRunResult) else 0
    value = result.result if isinstance(result, AgentRunResult) else result
    if isinstance(result, dict):
        attempt, value = int(result.get("attempt") or 0), result.get("result")
    return RunOutcome(RunState.DONE, result=value, attempt=attempt)


def _outcome_of(err: ChildWorkflowError) -> tuple[RunOutcome, bool]:
    """How a child closed that did not complete, and whether by its own code."""
    cause = err.cause
    if isinstance(cause, ApplicationError):
        details = FailureDetails.from_details(cause.details)
        attempt = details.attempt if details else 0
        return RunOutcome(RunState.ERROR, error=cause.message, attempt=attempt), True
    if isinstance(cause, CancelledError):
        details = FailureDetails.from_details(cause.details)
        attempt = details.attempt if details else 0
        return RunOutcome(RunState.ERROR, error="cancelled", attempt=attempt), True
    if isinstance(cause, TerminatedError):
        return RunOutcome(RunState.ERROR, error=f"terminated: {cause.message}"), False
    return RunOutcome(RunState.ERROR, error=str(cause or err)), False


_ = ErrorType  # the run workflow's failures carry these types
