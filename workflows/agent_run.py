"""AgentRunWorkflow: one run of one agent, on the slot its scope's coordinator granted it.

Registered as the task queue's *dynamic* workflow, it receives every start on the queue, of any
type and with any arguments, undecoded. Only a start by a slot's own coordinator runs an agent:
one of another type, with bad input, on an id that is not a slot, or not started by that slot's
coordinator (the server says who the parent is; no input can) ends ERROR at once, naming how to
start a run.

It drives its agent's attempts itself (see :mod:`workflows.attempt_book`) and **closes by its
own code only once every agent it started has stopped**: each dispatch revealed its stop key,
or one lease has passed since it stopped being acknowledged. So its coordinator may give the
slot to the next run the moment this execution closes that way; only a close from outside
(terminate, timeout) makes the slot drain for a lease first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.exceptions import CancelledError as TemporalCancelledError

from workflows.attempt_book import (
    AttemptBook,
    AttemptEnd,
    AttemptRefusedError,
    EndKind,
    attempt_end,
)

with workflow.unsafe.imports_passed_through():
    from agent_runner.contract import (
        CLAIM_ATTEMPT,
        PROGRESS,
        REPORT_ATTEMPT,
        RUN_AGENT_ACTIVITY,
        RUN_WORKFLOW,
        SCOPE_WORKFLOW,
        WATCH_ATTEMPT,
        AgentOutput,
        AgentRunResult,
        AgentTask,
        AttemptClaim,
        AttemptGo,
        AttemptReport,
        AttemptWatch,
        ErrorType,
        FailureDetails,
        Progress,
        SlotRunInput,
    )
    from agent_runner.ids import agent_task_queue, place_of
    from agent_runner.lease import (
        LOST_DISPATCHES,
        attempt_deadline_seconds,
        lease_seconds,
        retry_interval_seconds,
    )
    from agent_runner.validation import InvalidRunInputError, parse_as, quoted, shortened

CANCELLED = "cancelled"
# The patch that sends a lost dispatch again (histories from before it replay as they ran).
RESEND_LOST = "resend-lost-dispatch"


class NotGrantedError(InvalidRunInputError):
    error_type = ErrorType.NOT_A_GRANTED_RUN


class _Cancelled(Exception):
    """The run was cancelled; its agent has stopped (or been waited out)."""


@workflow.defn(dynamic=True)
class AgentRunWorkflow:
    def __init__(self) -> None:
        self._book: AttemptBook | None = None
        self._cancelled = False
        self._max_attempts = 0
        self._progress: Progress | None = None
        self._last_failure: str | None = None
        self._reports: dict[int, AttemptReport] = {}
        self._lost = 0

    # --- messages from the attempts -------------------------------------------------------------

    @workflow.update(name=CLAIM_ATTEMPT.name)
    def claim_attempt(self, claim: AttemptClaim) -> AttemptGo:
        """A dispatch asks to start its agent (see :class:`AttemptBook`)."""
        assert self._book is not None
        go = self._book.claim(claim, workflow.now())
        self._progress = None
        self._show()
        return go

    @claim_attempt.validator
    def _check_claim(self, claim: AttemptClaim) -> None:
        if self._book is None or self._cancelled:
            raise AttemptRefusedError("the run is not running an attempt")
        self._book.check(claim)

    @workflow.update(name=WATCH_ATTEMPT.name)
    async def watch_attempt(self, attempt: int) -> AttemptWatch:
        """Answers a working dispatch when its run is cancelled (it stops its agent at once),
        or when its attempt is over."""
        book = self._book
        assert book is not None
        await workflow.wait_condition(
            lambda: self._cancelled or book.current != attempt or not book.claimable
        )
        return AttemptWatch(cancelled=self._cancelled)

    @watch_attempt.validator
    def _check_watch_attempt(self, attempt: int) -> None:
        if self._book is None or not self._book.claimed(attempt):
            raise AttemptRefusedError(f"attempt {quoted(attempt)} has not been claimed")

    @workflow.update(name=REPORT_ATTEMPT.name)
    def report_attempt(self, report: AttemptReport) -> None:
        """A dispatch's result, with the stop key its claim committed to."""
        self._reports[report.attempt] = report

    @report_attempt.validator
    def _check_report(self, report: AttemptReport) -> None:
        if self._book is None:
            raise AttemptRefusedError("the run is not running an attempt")
        if report.not_after is not None and workflow.now() > report.not_after:
            # Its attempt has given up on it by now, and says the agent stopped unreported.
            raise AttemptRefusedError("the report came after its attempt gave up on it")
        self._book.check_report(report.attempt, report.stop_key)

    @workflow.signal(name=PROGRESS.name)
    def progress(self, report: RawValue) -> None:
        """How far the working attempt is: shown in the Web UI (and read from the history)."""
        value = _decoded(report, Progress)
        if (
            isinstance(value, Progress)
            and value.valid
            and self._book
            and value.attempt == self._book.current
        ):
            self._progress = value
            self._show()

    # --- the run --------------------------------------------------------------------------------

    @workflow.run
    async def run(self, args: Sequence[RawValue]) -> AgentRunResult:
        try:
            run_input = _granted_input(args)
        except InvalidRunInputError as err:
            workflow.logger.warning("run_refused", extra={"reason": str(err), **_log_keys()})
            raise ApplicationError(
                str(err), FailureDetails(), type=err.error_type, non_retryable=True
            ) from None
        policy = run_input.policy
        lease = lease_seconds(policy.heartbeat_timeout_seconds)
        self._book = AttemptBook(run_input.fence_base, lease)
        self._max_attempts = policy.max_attempts
        try:
            return await self._attempts(run_input)
        except _Cancelled:
            raise TemporalCancelledError(CANCELLED, FailureDetails(self._book.current)) from None

    async def _attempts(self, run_input: SlotRunInput) -> AgentRunResult:
        policy = run_input.policy
        book = self._book
        assert book is not None
        reason = ""
        for attempt in range(1, policy.max_attempts + 1):
            if attempt > 1:
                pause = retry_interval_seconds(policy.retry_initial_interval_seconds, attempt - 1)
                await self._sleep(pause)
            await self._until_stopped()
            end = await self._attempt(run_input, attempt)
            while self._resend(run_input, attempt, end):
                end = await self._attempt(run_input, attempt)
            proven = book.finish(attempt, end.stop_key, workflow.now())
            await self._until_stopped()
            if self._cancelled or end.kind == EndKind.CANCELLED:
                if end.kind == EndKind.DONE and proven and end.output is not None:
                    return _result(run_input, end.output)  # it finished before the cancel
                raise _Cancelled
            if end.kind == EndKind.DONE and proven and end.output is not None:
                return _result(run_input, end.output)
            reason = _reason(end, proven)
            if end.kind == EndKind.FINAL and proven:
                break
            retrying = attempt < policy.max_attempts
            self._failed(attempt, reason, retrying=retrying)
        raise ApplicationError(
            reason, FailureDetails(book.current), type=ErrorType.AGENT_FAILED, non_retryable=True
        )

    async def _attempt(self, run_input: SlotRunInput, attempt: int) -> AttemptEnd:
        """Run one attempt and wait for its end: its answer, or its deadline. A cancel of the
        run is passed to the attempt, whose agent stops (and says so) within moments."""
        book = self._book
        assert book is not None
        book.begin(attempt)
        policy = run_input.policy
        heartbeat = timedelta(seconds=policy.heartbeat_timeout_seconds)
        self._show()
        activity = workflow.start_activity(
            RUN_AGENT_ACTIVITY,
            AgentTask(
                run_id=run_input.run_id,
                agent_type=run_input.agent_type,
                user_id=run_input.user_id,
                attempt=attempt,
                max_attempts=policy.max_attempts,
                timeout_seconds=policy.timeout_seconds,
                heartbeat_timeout_seconds=policy.heartbeat_timeout_seconds,
                params=run_input.params,
            ),
            activity_id=f"attempt-{attempt}",
            task_queue=agent_task_queue(workflow.info().task_queue, run_input.agent_type),
            # Our attempts never complete this way (their result is reported first): a
            # completion is another client's, and must not fail the workflow task to decode.
            result_type=RawValue,
            schedule_to_start_timeout=timedelta(seconds=run_input.worker_wait_seconds),
            # The activity stops its agent at timeout_seconds itself; the server's limit is a
            # backstop one heartbeat timeout later.
            start_to_close_timeout=timedelta(seconds=policy.timeout_seconds) + heartbeat,
            heartbeat_timeout=heartbeat,
            retry_policy=RetryPolicy(maximum_attempts=1),
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )
        activity.add_done_callback(_read_outcome)
        deadline = attempt_deadline_seconds(
            policy.timeout_seconds, policy.heartbeat_timeout_seconds, run_input.worker_wait_seconds
        )
        grace = book.lease_seconds + policy.heartbeat_timeout_seconds

        def reported() -> bool:
            return attempt in self._reports

        try:
            await workflow.wait_condition(lambda: activity.done() or reported(), timeout=deadline)
        except (asyncio.CancelledError, TemporalCancelledError):
            self._cancelled = True
            activity.cancel()
            await _settled(activity, reported, grace)
        except TimeoutError:
            activity.cancel()
            await _settled(activity, reported, grace)
        if reported():
            report = self._reports[attempt]
            return AttemptEnd(
                report.kind,
                report.reason,
                output=AgentOutput(report.result, attempt, report.stop_key),
                stop_key=report.stop_key,
            )
        return _end_of(activity)

    def _resend(self, run_input: SlotRunInput, attempt: int, end: AttemptEnd) -> bool:
        """Whether to send the attempt again because its dispatch was lost before its agent
        started (see :mod:`workflows.attempt_book`); that does not use up an attempt."""
        book = self._book
        assert book is not None
        if self._cancelled or self._lost >= LOST_DISPATCHES or not book.lost(attempt, end):
            return False
        if not workflow.patched(RESEND_LOST):
            return False
        self._lost += 1  # no dispatch claimed it: nothing to wait out, and it begins again
        self._failed(attempt, f"{end.reason}, before its agent started", retrying=True)
        workflow.logger.warning(
            "attempt_dispatch_lost",
            extra={
                "run_id": run_input.run_id,
                "agent_type": run_input.agent_type,
                "user_id": run_input.user_id,
                "attempt": attempt,
                "lost": self._lost,
                "reason": end.reason,
            },
        )
        return True

    async def _sleep(self, seconds: float) -> None:
        """A pause between attempts; a cancel of the run cuts it short."""
        try:
            await workflow.sleep(seconds)
        except (asyncio.CancelledError, TemporalCancelledError):
            self._cancelled = True
            await self._until_stopped()
            raise _Cancelled from None

    async def _until_stopped(self) -> None:
        """Wait until every agent this run started has certainly stopped; a cancel of the run
        does not cut this short."""
        book = self._book
        assert book is not None
        waited = False
        while (wait := book.wait_seconds(workflow.now())) > 0:
            waited = True
            assert book.not_before is not None
            workflow.upsert_memo({"waiting_until": book.not_before.isoformat()})
            workflow.set_current_details(
                f"Waiting until {book.not_before:%H:%M:%S} UTC: an attempt of this run may "
                "still be working (it never said it stopped), and only one agent may work on "
                "a slot at a time."
            )
            try:
                await workflow.sleep(wait)
            except (asyncio.CancelledError, TemporalCancelledError):
                self._cancelled = True
        if waited:
            workflow.upsert_memo({"waiting_until": ""})
            self._show()

    def _failed(self, attempt: int, reason: str, *, retrying: bool) -> None:
        self._last_failure = f"attempt {attempt} failed: {reason}" + (
            "; it will be retried" if retrying else ""
        )
        workflow.upsert_memo(
            {"last_failure": {"attempt": attempt, "reason": reason, "retrying": retrying}}
        )
        self._show()

    def _show(self) -> None:
        """The Web UI's "Current details": which attempt works, how far, and why the one
        before failed."""
        book = self._book
        if book is None:
            return
        lines = [f"**Attempt {book.current} of {self._max_attempts}** is working."]
        if self._progress is not None:
            lines.append(
                f"Progress: **{self._progress.fraction:.0%}** {self._progress.message}".rstrip()
            )
        if self._last_failure:
            lines.append(f"Before it, {self._last_failure}.")
        workflow.set_current_details("\n\n".join(lines))


async def _settled(activity: asyncio.Task[Any], reported: Callable[[], bool], grace: float) -> None:
    """Wait up to ``grace`` seconds for a cancelled attempt to answer."""
    with contextlib.suppress(TimeoutError, asyncio.CancelledError, TemporalCancelledError):
        await workflow.wait_condition(lambda: activity.done() or reported(), timeout=grace)


def _read_outcome(activity: asyncio.Task[Any]) -> None:
    """Read how the attempt's activity ended, whoever needs it: an attempt that reported its
    end fails its activity afterwards, and asyncio logs an exception nobody read as an error
    ("exception was never retrieved")."""
    if not activity.cancelled():
        activity.exception()


def _end_of(activity: asyncio.Task[Any]) -> AttemptEnd:
    if not activity.done() or activity.cancelled():
        return attempt_end(None)
    error = activity.exception()
    if error is not None:
        return attempt_end(error)
    return AttemptEnd(
        EndKind.FAILED,
        "the attempt was completed by another client (temporal activity complete), not by "
        "its agent: its result is ignored",
    )


def _reason(end: AttemptEnd, proven: bool) -> str:
    if proven:
        return end.reason
    if end.kind == EndKind.DONE:
        return (
            "the attempt was completed by another client, without its stop key: its result "
            "is not the agent's"
        )
    if end.kind == EndKind.FINAL:
        return f"the attempt was failed by another client ({shortened(end.reason)})"
    return end.reason


def _result(run_input: SlotRunInput, output: AgentOutput) -> AgentRunResult:
    return AgentRunResult(
        agent_type=run_input.agent_type,
        user_id=run_input.user_id,
        result=output.result,
        attempt=output.attempt,
    )


def _granted_input(args: Sequence[RawValue]) -> SlotRunInput:
    """The run's input, if its start is a grant of its slot's coordinator."""
    info = workflow.info()
    place = place_of(info.workflow_id)
    if info.workflow_type != RUN_WORKFLOW:
        raise InvalidRunInputError(
            f"Unsupported workflow type {quoted(info.workflow_type)} on the agent-runner task "
            f"queue: runs start through their scope's coordinator ({SCOPE_WORKFLOW})"
        )
    if place is None or place.slot is None:
        raise NotGrantedError(
            f"{quoted(info.workflow_id)} is not a slot id; runs start through their scope's "
            f"coordinator ({SCOPE_WORKFLOW}, update 'admit'), which starts them on its slots "
            "<scope id>:slot-<n>"
        )
    coordinator = place.scope.id
    if info.parent is None or info.parent.workflow_id != coordinator:
        raise NotGrantedError(
            f"runs on {info.workflow_id} are started by its coordinator {coordinator} only: "
            f"send it the update 'admit' (temporal workflow execute-update-with-start "
            f"--workflow-id {coordinator} --type {SCOPE_WORKFLOW} --update-name admit ...)"
        )
    if len(args) != 1:
        raise InvalidRunInputError(f"Invalid input: {RUN_WORKFLOW} takes one input")
    raw = _decoded(args[0], None)
    checked: SlotRunInput = parse_as(SlotRunInput, raw, "input")
    return checked


def _decoded(raw: RawValue, type_hint: Any) -> object:
    """A payload's value, or None when it does not decode (a message from someone else)."""
    try:
        return workflow.payload_converter().from_payload(raw.payload, type_hint)
    except Exception:
        return None


def _log_keys() -> dict[str, Any]:
    """A refused start has no run of ours: its line names the execution that was refused."""
    info = workflow.info()
    return {"workflow_id": info.workflow_id, "temporal_run_id": info.run_id}
