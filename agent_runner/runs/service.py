"""Runs: start one, read its status, cancel it, see a scope's queue. The public Python API other
services use; the REST API's routes each make one call to it.

Every decision is the scope's coordinator's (:mod:`workflows.scope`), reached by its name and
the typed messages of :mod:`agent_runner.contract`: nothing here imports workflow code. Reads go
to the coordinator (a query: where is the run) and to the run's execution on its slot (one
``describe``: how does it go), and :func:`agent_runner.status.run_status` makes the status.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import uuid
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import structlog
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecutionStatus,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from agent_runner import search_attributes
from agent_runner.contract import (
    ADMIT,
    CANCEL,
    PRIORITY_DEFAULT,
    RUN_WORKFLOW,
    RUNS,
    SCOPE_WORKFLOW,
    VIEW,
    Admission,
    AdmitAnswer,
    AdmitRequest,
    CancelAnswer,
    CancelEffect,
    OnBusy,
    RunPolicy,
    RunRecord,
    RunRequest,
    ScopeView,
    ViewRequest,
)
from agent_runner.executions import describe_view
from agent_runner.ids import RunRef, RunTarget, Scope, parse_run_id, parse_workflow_id
from agent_runner.runs.admission import Admissions
from agent_runner.runs.errors import (
    AgentBusyError,
    IdempotencyKeyReusedError,
    NoWorkerError,
    QueueFullError,
    RunFinishedError,
    RunNotFoundError,
    TemporalUnavailableError,
    cancelling,
    fetch_page,
    is_unavailable,
    not_applied,
    refused_late,
    temporal_call,
    update_wait,
)
from agent_runner.runs.gate import StartGate
from agent_runner.runs.pollers import pollers
from agent_runner.runs.reads import RecordReads
from agent_runner.status import ExecutionView, RunStatus, run_status
from agent_runner.validation import InvalidRunInputError, check_admission, checked_request

logger = structlog.stdlib.get_logger(__name__)
T = TypeVar("T")
# A run's execution closes moments before its coordinator frees its slot: how long a read that
# tells the run's end waits for that (see Runs.slot_freed), and how often it looks.
SLOT_FREED_WAIT = timedelta(seconds=2)
SLOT_FREED_POLL = timedelta(milliseconds=20)
# Of a start's RPC budget: the part its coordinator has to decide in. An answer that did not
# come back within the budget is asked for once more (see _ask_again), for half the budget or a
# second, whichever is longer: no start answers 503 for a run it made while the server answers.
DECIDE_WITHIN = 0.75
LATE_ANSWER = 0.5
LATE_ANSWER_MIN = timedelta(seconds=1)
# How many budgets in all a call to a coordinator on its way out is made again for (each try
# has a budget of its own): a busy coordinator continuing as new can fail its closing task a
# few times over as new events come in during it (chaos seed 93151: three times in 1.3 s, and
# a start answered 503 with no fault around it).
PASSING_BUDGETS = 2
# Past a try's RPC timeout, how long its wait for the update's answer may go on before it ends
# as that timeout does (see update_wait): an accepted update's answer is polled with no end.
WAIT_SLACK = 0.1


@dataclass(frozen=True)
class StartRequest:
    """A start, checked for shape (whether its agent exists is the caller's to check)."""

    run: RunRequest
    on_busy: OnBusy = OnBusy.REJECT
    idempotency_key: str | None = None
    priority: int = PRIORITY_DEFAULT
    fairness_key: str | None = None

    @property
    def fingerprint(self) -> str:
        params = json.dumps(self.run.params, sort_keys=True, separators=(",", ":"))
        text = f"{self.run.agent_type}\n{self.run.user_id}\n{params}"
        return hashlib.sha256(text.encode()).hexdigest()


def start_request(
    agent_type: str,
    user_id: str | uuid.UUID,
    *,
    policy: RunPolicy | None = None,
    params: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
    on_busy: OnBusy = OnBusy.REJECT,
    priority: int = PRIORITY_DEFAULT,
    fairness_key: str | None = None,
    queue_timeout_seconds: float | None = None,
) -> StartRequest:
    """A checked start; :class:`~agent_runner.validation.InvalidRunInputError` (a
    ``ValueError``) says what is wrong. ``queue_timeout_seconds`` replaces the policy's."""
    if queue_timeout_seconds is not None:
        policy = replace(policy or RunPolicy(), queue_timeout_seconds=queue_timeout_seconds)
    run = checked_request(
        RunRequest(
            agent_type=agent_type,
            user_id=str(user_id),
            params=dict(params) if params is not None else None,
            policy=policy,
        ),
        policy or RunPolicy(),
    )
    request = StartRequest(run, on_busy, idempotency_key, priority, fairness_key)
    check_admission(AdmitRequest("", run, on_busy, priority=priority, fairness_key=fairness_key))
    return request


@dataclass(frozen=True)
class StartOutcome:
    run_id: str
    # None: the run holds a slot; else its place in the queue (1 is next).
    queue_position: int | None = None
    # The same request was made before (the same Idempotency-Key): this is that run.
    replayed: bool = False
    # on_busy=attach found this run open (the same agent type, user and params).
    attached: bool = False
    # on_busy=replace cancelled this run to take its slot.
    replaced_run_id: str | None = None


# A coordinator whose workflow task failed this many times in a row cannot be run by any worker.
FAILING_TASK_ATTEMPTS = 5


@dataclass(frozen=True)
class OpenScope:
    """A scope with runs open, as visibility lists its coordinator: since when it runs, and
    its busy slots and waiting runs as it last published them."""

    scope: Scope
    started_at: datetime
    busy: int = 0
    waiting: int = 0


class Runs:
    def __init__(self, client: Client, target: RunTarget) -> None:
        self.client = client
        self.target = target
        self._admissions = Admissions(self._send_admits)
        # Starts in flight to the coordinators from this process (see agent_runner.runs.gate).
        self.gate = StartGate()
        self._reads = RecordReads(self._query_records)

    # --- starts ---------------------------------------------------------------------------------

    async def start(self, request: StartRequest) -> StartOutcome:
        """Start a run on a free slot of its scope, or queue it, or refuse it.

        Raises :class:`AgentBusyError` (reject, nothing free), :class:`QueueFullError`,
        :class:`IdempotencyKeyReusedError`, ``ValueError`` for a request the coordinator
        refuses, and :class:`TemporalUnavailableError`."""
        scope = self.target.scope(agent_type=request.run.agent_type, user_id=request.run.user_id)
        key = request.idempotency_key
        admit = AdmitRequest(
            request_id=f"key:{key}" if key else f"request:{uuid.uuid4()}",
            run=request.run,
            on_busy=request.on_busy,
            idempotency_key=key,
            fingerprint=request.fingerprint if key else None,
            priority=request.priority,
            fairness_key=request.fairness_key,
        )
        try:
            with temporal_call():
                answer = await self._admissions.admit(scope, admit)
        except TemporalUnavailableError:
            await self._no_worker_check()
            if await self._evict_squatter(scope):
                with temporal_call():
                    answer = await self._admissions.admit(scope, admit)
                return _outcome(answer, key)
            raise
        return _outcome(answer, key)

    async def _evict_squatter(self, scope: Scope) -> bool:
        """Terminate what holds the scope's coordinator id if it is not one of ours (another
        type or task queue), or was started with an input by another client (only a
        coordinator's own continue-as-new hands one on), or is ours but its workflow task keeps
        failing: such an execution can never answer its updates. True if one was terminated."""
        handle = self.client.get_workflow_handle(scope.id)
        try:
            description = await handle.describe(rpc_timeout=self.target.rpc_timeout)
            if description.status != WorkflowExecutionStatus.RUNNING:
                return False
            ours = (
                description.workflow_type == SCOPE_WORKFLOW
                and description.task_queue == self.target.task_queue
            )
            if ours:
                async for event in handle.fetch_history_events(rpc_timeout=self.target.rpc_timeout):
                    started = event.workflow_execution_started_event_attributes
                    ours = not started.input.payloads or bool(started.continued_execution_run_id)
                    break
            failing = description.raw_description.pending_workflow_task.attempt
            if ours and failing >= FAILING_TASK_ATTEMPTS:
                # Ours, but no worker can run it (a history the SDK cannot replay): it would
                # refuse every start for ever. Its successor takes over what it can ask of it
                # (see docs/design.md); runs that waited in its queue may be lost.
                await handle.terminate(
                    f"its workflow task failed {failing} times: a new coordinator takes over",
                    rpc_timeout=self.target.rpc_timeout,
                )
                logger.error("coordinator_replaced", scope=scope.id, task_attempts=failing)
                return True
            if ours:
                return False
            await handle.terminate(
                "not agent-runner's coordinator: another client started it",
                rpc_timeout=self.target.rpc_timeout,
            )
        except RPCError:
            return False
        logger.warning("coordinator_squatter_terminated", scope=scope.id)
        return True

    async def _no_worker_check(self) -> None:
        """Raise :class:`NoWorkerError` if nobody polls the task queue the coordinators run
        on (the server answered; nothing else could)."""
        try:
            polling = await pollers(
                self.client,
                self.target,
                self.target.task_queue,
                TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
        except RPCError:
            return
        if polling == 0:
            raise NoWorkerError(
                f"No worker polls task queue {self.target.task_queue!r}: a start is decided by "
                "its scope's coordinator, which runs on the workers. Start a worker."
            )

    async def _send_admits(
        self, scope: Scope, requests: list[AdmitRequest], update_id: str
    ) -> list[AdmitAnswer]:
        """:meth:`_admit_now` once the gate lets it through (it waits at most a budget for that,
        else :class:`StartsBusyError`); how long the answer took adapts the gate, and so does a
        coordinator that decided too late."""
        budget = self.target.rpc_timeout.total_seconds()
        loop = asyncio.get_running_loop()
        async with self.gate.through(budget) as ticket:
            began = loop.time()
            try:
                answers, decided_late = await self._admit_now(scope, requests, update_id)
            except (RPCError, WorkflowUpdateRPCTimeoutOrCancelledError) as err:
                if is_unavailable(err):
                    self.gate.overran(ticket)
                raise
            took = loop.time() - began
            if took > budget or decided_late:  # answered late (see _ask_again)
                self.gate.overran(ticket)
            elif took < budget / 2:
                self.gate.answered_in_time()
            return answers

    async def _admit_now(
        self, scope: Scope, requests: list[AdmitRequest], update_id: str
    ) -> tuple[list[AdmitAnswer], bool]:
        """:meth:`_admit_once`; if its coordinator decided too late (:class:`_Tried`), the
        requests it answered EXPIRED are sent once more, with a deadline of their own, if the
        PASSING_BUDGETS budgets from the first send leave at least half a budget. The answers,
        and whether any was decided too late.

        EXPIRED in answer to a try (not to a question asked again after a lost answer, which
        may be a decision made in time and forgotten since) is a decision: that coordinator
        started nothing for the request and remembered nothing of it, so sending it again
        cannot make a second run (and a request id it has answered since is answered the
        same). A coordinator can decide late with no fault: the execution after a busy one's
        continue-as-new reads its carried state and the settings first (chaos seed 47129:
        1.5 s, past the try's three quarters of the budget; the start answered 503). Once
        only: a coordinator that decided too late twice is overloaded, and the answer is 503.
        A resend that fails fails the requests it carried; the others keep their answers."""
        loop = asyncio.get_running_loop()
        budget = self.target.rpc_timeout.total_seconds()
        until = loop.time() + budget * PASSING_BUDGETS
        tried = await self._admit_once(scope, requests, update_id, until)
        answers = tried.answers
        late = [i for i, answer in enumerate(answers) if answer.admission == Admission.EXPIRED]
        if (
            not late
            or not tried.decided_late
            or loop.time() > until - budget / 2
            or any(answers[i].request_id != requests[i].request_id for i in late)
            or cancelling()
        ):
            return answers, bool(late)
        again = f"admit-{uuid.uuid4()}"
        logger.info("start_decided_late", scope=scope.id, update_id=update_id, again=again)
        try:
            retried = await self._admit_once(scope, [requests[i] for i in late], again, until)
        except (RPCError, WorkflowUpdateRPCTimeoutOrCancelledError, WorkflowUpdateFailedError):
            if len(late) == len(answers) or cancelling():
                raise
            return answers, True  # the late ones answer 503 (EXPIRED)
        answers = list(answers)
        for i, answer in zip(late, retried.answers, strict=True):
            answers[i] = answer
        return answers, True

    async def _admit_once(
        self, scope: Scope, requests: list[AdmitRequest], update_id: str, until: float
    ) -> _Tried:
        """One update-with-start on the scope's coordinator (started if none runs). A
        coordinator closing (idle) or continuing as new as the update reaches it answers
        NOT_FOUND, RESOURCE_EXHAUSTED or "not ready" (its closing workflow task was refused
        because the update came): the call is made again (see _within_budget) until the loop
        time ``until`` and reaches the next execution (the update's id keeps it from being
        applied twice)."""
        budget = self.target.rpc_timeout
        loop = asyncio.get_running_loop()
        stamped = requests
        decide_by = 0.0

        async def admit(
            timeout: timedelta, update_id: str = update_id, *, again: bool = False
        ) -> list[AdmitAnswer]:
            nonlocal stamped, decide_by
            if not again:
                # The coordinator decides by then (a later decision refuses the start:
                # EXPIRED), so its answer has the rest of the call's time to come back. Each
                # try has its own; a question again (_ask_again) keeps the last try's.
                decide_by = loop.time() + timeout.total_seconds() * DECIDE_WITHIN
                not_after = datetime.now(UTC) + timeout * DECIDE_WITHIN
                stamped = [replace(request, not_after=not_after) for request in requests]
            # A question is answered from what the coordinator holds, never started (and so is
            # taken in past its not_after).
            sent = [replace(request, question=True) for request in stamped] if again else stamped
            start: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
                SCOPE_WORKFLOW,
                id=scope.id,
                task_queue=self.target.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                static_summary=f"The coordinator of scope {scope.label}",
            )
            try:
                async with update_wait(timeout.total_seconds() + WAIT_SLACK):
                    answers: list[
                        AdmitAnswer
                    ] = await self.client.execute_update_with_start_workflow(
                        ADMIT.name,
                        sent,
                        start_workflow_operation=start,
                        id=update_id,
                        result_type=ADMIT.result_type,
                        rpc_timeout=timeout,
                    )
                return answers
            except WorkflowUpdateFailedError as err:
                if not refused_late(err):
                    raise
                # Come past its not_after (by the coordinator's worker's clock): refused before
                # it was taken in, so nothing was made, as an EXPIRED says.
                return [AdmitAnswer(request.request_id, Admission.EXPIRED) for request in sent]
            finally:
                await _settled(start)

        try:
            answers = await self._within_budget(admit, until)
        except (RPCError, WorkflowUpdateRPCTimeoutOrCancelledError) as err:
            if not _maybe_delivered(err):
                raise
            # Asked once the try's decision time has passed (a broken connection can end a try
            # sooner): asked before, the try could still reach the coordinator after the
            # question's EXPIRED, in time, and be started behind a 503.
            await asyncio.sleep(max(0.0, decide_by - loop.time()))
            late = await _ask_again(lambda wait, asked: admit(wait, asked, again=True), budget)
            if late is None:
                raise
            logger.info("start_answered_late", scope=scope.id, update_id=update_id)
            return _Tried(late, decided_late=False)
        # By this process's own clock: an EXPIRED that came back sooner was decided by a
        # server whose clock is ahead of ours, and sending it again would meet the same.
        return _Tried(answers, decided_late=loop.time() >= decide_by)

    async def _within_budget(
        self, call: Callable[[timedelta], Awaitable[T]], until: float | None = None
    ) -> T:
        """``call(its timeout)``, an update to a coordinator, made again while it meets the
        coordinator on its way out (see :func:`_passing`) or was never applied (see
        :func:`not_applied`: terminated under it, or unprocessed), until the loop time
        ``until`` (PASSING_BUDGETS budgets from now if None); each call has at most a budget.
        Nothing was applied in either case, so the next call reaches the next execution (or
        starts it) once."""
        budget = self.target.rpc_timeout.total_seconds()
        now = asyncio.get_running_loop().time()
        total = budget * PASSING_BUDGETS if until is None else until - now
        # A try with less than half a budget left could hardly be decided in time.
        return await _again_while_passing(call, total, budget, budget / 2)

    # --- reads ----------------------------------------------------------------------------------

    def locate(self, run_id: str) -> RunRef:
        """The run an id names; :class:`RunNotFoundError` for any other text."""
        ref = parse_run_id(self.target.workflow_id, run_id)
        if ref is None:
            raise RunNotFoundError(run_id)
        return ref

    async def status(self, run_id: str) -> RunStatus:
        """The run's status, read from the server and its scope's coordinator."""
        ref = self.locate(run_id)
        with temporal_call():
            try:
                record = await self.record(ref)
            except RPCError as err:
                if not is_unavailable(err):
                    raise
                # The coordinator did not answer (no worker, say): the server alone knows the
                # run once its workflow started on a slot.
                record = None
                if await self.execution_of(ref, None) is None:
                    raise
            execution = await self.execution_of(ref, record)
            if record is not None and execution is not None and execution.outcome is not None:
                record = await self.slot_freed(ref, record)
        status = run_status(ref.run_id, record, execution)
        if status is None:
            raise RunNotFoundError(run_id)
        return status

    async def record(self, ref: RunRef) -> RunRecord | None:
        """What the run's coordinator says of it; None when it does not know it."""
        try:
            return await self._reads.read(ref.scope, ref.run_id)
        except WorkflowQueryFailedError:
            if await self._is_coordinator(ref.scope):
                raise TemporalUnavailableError("the scope's coordinator did not answer") from None
            return None  # what holds the scope's id is no coordinator of ours
        except RPCError as err:
            if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
                return None
            raise

    async def _query_records(self, scope: Scope, run_ids: list[str]) -> list[RunRecord]:
        """One query of the scope's coordinator for the records of ``run_ids``."""
        records: list[RunRecord] = await self.client.get_workflow_handle(scope.id).query(
            RUNS.name,
            run_ids,
            result_type=RUNS.result_type,
            rpc_timeout=self.target.rpc_timeout,
        )
        return records

    async def slot_freed(self, ref: RunRef, record: RunRecord | None) -> RunRecord | None:
        """For a run whose execution has closed: its record once its coordinator has recorded
        the end (and so freed its slot), so that a client told the run ended can start the
        next at once. Waits :data:`SLOT_FREED_WAIT` at most (a coordinator without a worker
        frees nothing: the end is then told as the execution says it)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SLOT_FREED_WAIT.total_seconds()
        while record is not None and record.outcome is None and loop.time() < deadline:
            await asyncio.sleep(SLOT_FREED_POLL.total_seconds())
            try:
                record = await self.record(ref)
            except (RPCError, TemporalUnavailableError):
                return record
        return record

    async def _is_coordinator(self, scope: Scope) -> bool:
        description = await self.client.get_workflow_handle(scope.id).describe(
            rpc_timeout=self.target.rpc_timeout
        )
        return description.workflow_type == SCOPE_WORKFLOW

    async def execution_of(self, ref: RunRef, record: RunRecord | None) -> ExecutionView | None:
        """The run's execution on its slot: the one its record names, or (for a run its
        coordinator no longer keeps) the one visibility finds by its id."""
        if record is not None:
            if record.outcome is not None or not record.temporal_run_id or not record.workflow_id:
                return None
            handle = self.client.get_workflow_handle(
                record.workflow_id, run_id=record.temporal_run_id
            )
            return await describe_view(
                self.client, await handle.describe(rpc_timeout=self.target.rpc_timeout)
            )
        query = (
            f"{search_attributes.AGENT_RUN_ID.name} = '{ref.run_id}' AND "
            f"WorkflowId STARTS_WITH '{ref.scope.id}:slot-'"
        )
        async for execution in self.client.list_workflows(
            query, limit=1, rpc_timeout=self.target.rpc_timeout
        ):
            handle = self.client.get_workflow_handle(execution.id, run_id=execution.run_id)
            return await describe_view(
                self.client, await handle.describe(rpc_timeout=self.target.rpc_timeout)
            )
        return None

    async def view(self, scope: Scope, offset: int = 0, limit: int = 50) -> ScopeView | None:
        """What holds the scope's slots and what waits (one page); None when its coordinator
        does not run."""
        handle = self.client.get_workflow_handle(scope.id)
        with temporal_call():
            try:
                description = await handle.describe(rpc_timeout=self.target.rpc_timeout)
                if description.status != WorkflowExecutionStatus.RUNNING:
                    return None
                view: ScopeView = await handle.query(
                    VIEW.name,
                    ViewRequest(offset, limit),
                    result_type=ScopeView,
                    rpc_timeout=self.target.rpc_timeout,
                )
            except RPCError as err:
                if err.status == RPCStatusCode.NOT_FOUND:
                    return None
                raise
        return view

    async def open_runs(self, limit: int = 1000) -> list[str]:
        """The ids of runs whose workflow is open on a slot, oldest first (from visibility)."""
        query = (
            f"WorkflowType = '{RUN_WORKFLOW}' AND ExecutionStatus = 'Running' AND "
            f"WorkflowId STARTS_WITH '{self.target.workflow_id}' AND "
            f"{search_attributes.AGENT_RUN_ID.name} IS NOT NULL"
        )
        found: list[tuple[datetime, str]] = []
        with temporal_call():
            async for execution in self.client.list_workflows(
                query, limit=limit, rpc_timeout=self.target.rpc_timeout
            ):
                run_id = execution.typed_search_attributes.get(search_attributes.AGENT_RUN_ID)
                if run_id:
                    found.append((execution.start_time, run_id))
        return [run_id for _, run_id in sorted(found)]

    async def scope_page(
        self, token: bytes | None, size: int
    ) -> tuple[list[OpenScope], bytes | None]:
        """One page of the scopes with a busy slot or a run waiting, in visibility's order
        (newest coordinator first), and the token of the next page (None: the last).
        :class:`InvalidPageTokenError` for a token the server refuses."""
        query = (
            f"WorkflowType = '{SCOPE_WORKFLOW}' AND ExecutionStatus = 'Running' AND "
            f"WorkflowId STARTS_WITH '{self.target.workflow_id}' AND "
            f"({search_attributes.QUEUE_DEPTH.name} > 0 OR {search_attributes.SLOTS_BUSY.name} > 0)"
        )
        executions = self.client.list_workflows(
            query, page_size=size, next_page_token=token, rpc_timeout=self.target.rpc_timeout
        )
        with temporal_call():
            await fetch_page(executions, token)
        scopes: list[OpenScope] = []
        for execution in executions.current_page or []:
            place = parse_workflow_id(self.target.workflow_id, execution.id)
            if place is None or place.slot is not None:
                continue
            found = execution.typed_search_attributes
            scopes.append(
                OpenScope(
                    place.scope,
                    execution.start_time,
                    busy=found.get(search_attributes.SLOTS_BUSY) or 0,
                    waiting=found.get(search_attributes.QUEUE_DEPTH) or 0,
                )
            )
        return scopes, executions.next_page_token or None

    # --- cancel ---------------------------------------------------------------------------------

    async def cancel(self, run_id: str) -> CancelAnswer:
        """Take a waiting run out of its queue (it ends at once, never started) or pass the
        cancel on to its workflow, whose agent stops within moments.
        :class:`RunFinishedError` if it had ended; :class:`RunNotFoundError` if there is no
        such run."""
        ref = self.locate(run_id)
        with temporal_call():
            answer = await self._send_cancel(ref)
        if answer.effect == CancelEffect.UNKNOWN:
            await self.status(run_id)  # one the coordinator no longer keeps has ended
            raise RunFinishedError(run_id)
        if answer.effect == CancelEffect.ENDED:
            raise RunFinishedError(run_id)
        return answer

    async def _send_cancel(self, ref: RunRef) -> CancelAnswer:
        """The ``cancel`` update, made again within the budget when it met its coordinator on
        its way out (continuing as new: "unexpected workflow task failure"), as an admit is
        (found by the randomized run as a 503 with no fault around it). UNKNOWN when no
        coordinator runs."""
        handle = self.client.get_workflow_handle(ref.scope.id)

        async def cancel(timeout: timedelta) -> CancelAnswer:
            try:
                async with update_wait(timeout.total_seconds() + WAIT_SLACK):
                    answer: CancelAnswer = await handle.execute_update(
                        CANCEL.name, ref.run_id, result_type=CancelAnswer, rpc_timeout=timeout
                    )
            except RPCError as err:
                if err.status != RPCStatusCode.NOT_FOUND:
                    raise
                answer = CancelAnswer(CancelEffect.UNKNOWN)
            return answer

        # A try whose wait ran out (its update met the coordinator closing, and the server
        # refused it until the try's time was gone: chaos seed 19477) is made again while half a
        # budget is left: a cancel sent twice does what one does, and answers what happened.
        loop = asyncio.get_running_loop()
        budget = self.target.rpc_timeout.total_seconds()
        until = loop.time() + budget * PASSING_BUDGETS
        while True:
            try:
                return await self._within_budget(cancel, until)
            except WorkflowUpdateRPCTimeoutOrCancelledError:
                if cancelling() or loop.time() > until - budget / 2:
                    raise


async def start_agent_run(
    client: Client,
    agent_type: str,
    user_id: str | uuid.UUID,
    *,
    target: RunTarget,
    policy: RunPolicy | None = None,
    params: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
    on_busy: OnBusy = OnBusy.REJECT,
) -> str:
    """Start a run and return its id: :func:`start_request`, then :meth:`Runs.start` (on one
    :class:`Runs` per client and target, so concurrent starts share its updates)."""
    request = start_request(
        agent_type,
        user_id,
        policy=policy,
        params=params,
        idempotency_key=idempotency_key,
        on_busy=on_busy,
    )
    services = _SERVICES.setdefault(client, {})
    runs = services.get(target) or services.setdefault(target, Runs(client, target))
    return (await runs.start(request)).run_id


_SERVICES: weakref.WeakKeyDictionary[Client, dict[RunTarget, Runs]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class _Tried:
    """The answers to one admit (see Runs._admit_once), and whether they came back from a try
    after its decision time, by this process's clock (so an EXPIRED among them was decided too
    late, not by a clock ahead of ours, nor in answer to a question asked again)."""

    answers: list[AdmitAnswer]
    decided_late: bool


async def _settled(start: WithStartWorkflowOperation[Any, Any]) -> None:
    """Take the start operation's own answer too (the SDK sets it, failed, when the call
    failed), so nothing is left unretrieved."""
    with contextlib.suppress(BaseException):
        await asyncio.wait_for(start.workflow_handle(), timeout=0.001)
    if cancelling():  # a cancel of our own task that came meanwhile is not taken in
        raise asyncio.CancelledError


def _outcome(answer: AdmitAnswer, key: str | None) -> StartOutcome:
    if answer.admission in (Admission.STARTED, Admission.QUEUED, Admission.ATTACHED):
        assert answer.run_id is not None
        attached = answer.admission == Admission.ATTACHED
        return StartOutcome(
            answer.run_id, answer.queue_position, answer.replayed, attached, answer.replaced_run_id
        )
    if answer.admission == Admission.BUSY:
        raise AgentBusyError(
            answer.holder_run_id, answer.holder_granted_at, paused=answer.reason == "paused"
        )
    if answer.admission == Admission.FULL:
        raise QueueFullError()
    if answer.admission == Admission.EXPIRED:
        raise TemporalUnavailableError("the coordinator answered after the call's budget")
    if answer.admission == Admission.KEY_REUSED:
        raise IdempotencyKeyReusedError(
            f"Idempotency-Key {key!r} was already used with a different request"
        )
    raise InvalidRunInputError(answer.reason or "the coordinator refused the run")


__all__ = ["TemporalUnavailableError", "timedelta"]


def _maybe_delivered(err: RPCError | WorkflowUpdateRPCTimeoutOrCancelledError) -> bool:
    """Whether an admit that failed may still have reached its coordinator: its call timed out
    or its connection broke. A server too busy for it (RESOURCE_EXHAUSTED) or a coordinator
    whose task keeps failing took nothing."""
    if not is_unavailable(err):
        return False
    cause = err if isinstance(err, RPCError) else err.__cause__
    return not isinstance(cause, RPCError) or cause.status not in (
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.FAILED_PRECONDITION,
    )


async def _ask_again(
    admit: Callable[[timedelta, str], Awaitable[list[AdmitAnswer]]], budget: timedelta
) -> list[AdmitAnswer] | None:
    """The answers to an admit whose call ran out of budget, asked for once more.

    The coordinator may have decided in time (before ``not_after``) with its answer lost on the
    way: its runs were started, and a ``503`` would tell the callers to start them again (found
    by trying 300 new users at once: 11 starts answered 503 had run). So the same requests are
    sent again, for LATE_ANSWER of the budget (again while they meet the coordinator on its way
    out): the coordinator answers a request id it has answered with that answer, and one it has
    not (or not yet) decided on with EXPIRED, since ``not_after`` has passed; whichever
    execution of it is current (it may have continued as new since). None if that fails
    otherwise: then nobody can tell (an Idempotency-Key makes the retry safe, see
    docs/api.md)."""
    wait = max(budget * LATE_ANSWER, LATE_ANSWER_MIN).total_seconds()
    asked = f"admit-{uuid.uuid4()}"
    try:
        async with asyncio.timeout(wait):
            # Meeting the coordinator on its way out (what made the answer late, often), it
            # is asked again, within the wait, of the execution after it.
            return await _again_while_passing(lambda left: admit(left, asked), wait, wait, 0.0)
    except (
        TimeoutError,
        RPCError,
        WorkflowUpdateRPCTimeoutOrCancelledError,
        WorkflowUpdateFailedError,
    ):
        if cancelling():  # our own task's cancel (the SDK's error for it): not an outage
            raise
        return None


async def _again_while_passing(
    call: Callable[[timedelta], Awaitable[T]], total: float, per_try: float, spare: float
) -> T:
    """``call(its timeout)``, an update to a coordinator, made again while it meets the
    coordinator on its way out (see :func:`_passing`) or was never applied (see
    :func:`not_applied`), for ``total`` seconds in all: each try at most ``per_try``, none
    begun with less than ``spare`` left. The last error is raised."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + total
    while True:
        try:
            return await call(timedelta(seconds=min(per_try, max(0.1, deadline - loop.time()))))
        except RPCError as err:
            if not _passing(err) or loop.time() > deadline - spare:
                raise
        except WorkflowUpdateFailedError as err:
            if not not_applied(err) or loop.time() > deadline - spare:
                raise
        await asyncio.sleep(random.uniform(0.02, 0.1))  # noqa: S311 (jitter)


def _passing(err: RPCError) -> bool:
    """Whether an admit met a coordinator on its way out (closing or continuing as new), so the
    same call, made again, reaches the execution after it."""
    if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.RESOURCE_EXHAUSTED):
        return True
    # The server aborts an update whose workflow task failed; a coordinator's closing task
    # fails when an update arrives during it (WorkflowNotReadyFailure, FAILED_PRECONDITION).
    return err.status == RPCStatusCode.FAILED_PRECONDITION and "workflow task" in err.message
