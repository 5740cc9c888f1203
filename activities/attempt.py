"""One dispatch of an attempt, from its claim to its one end line.

The rules it keeps (see :mod:`workflows.attempt_book` for the run's side):

- **Claim first.** It confirms its lease, commits to a fresh stop key, and claims the attempt
  from its run; its agent starts only once the run says so (and after the wait it names).
- **Work only under the lease.** The agent runs beside the lease keeper and a watch on the run;
  it is stopped the moment the lease is lost, the server asks it to stop, or its run is
  cancelled.
- **One end line.** ``agent_complete`` once the run has accepted the result, or
  ``agent_error``, ``agent_cancelled``, ``agent_timed_out``, ``agent_lease_lost``: exactly one
  per ``agent_start``, whatever ends the dispatch (:meth:`Attempt.closed` writes the last
  resort). Every failure carries the stop key, the dispatch's word that its agent stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.exceptions import ApplicationError

from activities.lease import Lease
from activities.reach import RefusedError, accepted, reach
from agent_runner.agents import LeaseLostError, PermanentError
from agent_runner.contract import (
    CLAIM_ATTEMPT,
    REPORT_ATTEMPT,
    WATCH_ATTEMPT,
    AgentTask,
    AttemptClaim,
    AttemptEndKind,
    AttemptGo,
    AttemptReport,
    AttemptWatch,
    ErrorType,
    FailureDetails,
)
from agent_runner.lease import commitment

# How long an attempt tries to hand its result to its run before it gives up; and how long
# after that a try already on its way may still be taken (a workflow task's timeout, and some).
REPORT_FOR = timedelta(seconds=30)
REPORT_SETTLES = timedelta(seconds=15)

Log = structlog.stdlib.BoundLogger
# The server no longer knows the attempt: its run was closed, or the attempt timed out there.
GONE = "the server no longer knows this attempt"
CANCELLED = "cancelled"


class Attempt:
    def __init__(self, run: WorkflowHandle[Any, Any], task: AgentTask, log: Log) -> None:
        self.run = run
        self.task = task
        self.log = log
        self.lease = Lease(activity.client(), task.heartbeat_timeout_seconds)
        self.stop_key = secrets.token_hex(32)
        self._started = False
        self._ended = False
        self._stopped_at: datetime | None = None

    # --- before the agent ---------------------------------------------------------------------

    async def claim(self) -> AttemptGo:
        """Confirm the lease, claim the attempt (holding the lease meanwhile), wait as long as
        the run says; a refusal is ``agent_not_started`` (no agent has started)."""
        try:
            await self.lease.confirm()
            go: AttemptGo = await self._held(
                reach(
                    lambda: self.run.execute_update(
                        CLAIM_ATTEMPT.name,
                        AttemptClaim(self.task.attempt, commitment(self.stop_key)),
                        id=f"claim-{self.stop_key[:32]}",
                        result_type=AttemptGo,
                        rpc_timeout=timedelta(seconds=self.lease.renew_every),
                    )
                )
            )
            if go.wait_seconds > 0:
                # An earlier dispatch of this attempt may still work: start after its lease.
                self.log.warning(
                    "agent_waiting",
                    reason="an earlier dispatch may be working",
                    seconds=go.wait_seconds,
                )
                await self._held(asyncio.sleep(go.wait_seconds))
            # The claim's answer may come after the lease it was held under ran out (a slow
            # process): no agent starts without a lease in hand.
            self.lease.check()
        except (LeaseLostError, RefusedError) as err:
            self.log.warning("agent_not_started", reason=str(err))
            raise self.failure(f"AttemptRefused: {err}", ErrorType.ATTEMPT_REFUSED) from None
        return go

    def started(self, fencing_token: int) -> None:
        self.log = self.log.bind(fencing_token=fencing_token)
        self._started = True
        self.log.info(
            "agent_start",
            message=f"Hello, I am a {self.task.agent_type} agent for {self.task.user_id}",
            lease_seconds=self.lease.duration,
        )

    async def _held(self, work: Awaitable[Any]) -> Any:
        """``work``'s result, renewing the lease meanwhile; :class:`LeaseLostError` if the
        lease is lost (or the attempt is stopped) first."""
        task = asyncio.ensure_future(work)
        keeper = asyncio.ensure_future(self.lease.keep(on_lost=task.cancel, on_stop=task.cancel))
        try:
            await asyncio.wait({task})
        finally:
            keeper.cancel()
        _error_of(task)
        if task.cancelled() or self.lease.stop_reason is not None:
            raise LeaseLostError(self.lease.lost_reason or self.lease.stop_reason or "stopped")
        return task.result()

    # --- the agent ------------------------------------------------------------------------------

    async def supervise(self, work: Awaitable[object]) -> object:
        """Run the agent beside its lease keeper and its run's watch; its result, only while
        the lease holds. Every other end writes its end line and raises with the stop key."""
        agent = asyncio.ensure_future(work)
        lease = self.lease
        keeper = asyncio.ensure_future(lease.keep(on_lost=agent.cancel, on_stop=agent.cancel))
        watch = asyncio.ensure_future(self._watched(agent))
        try:
            done, _ = await asyncio.wait({agent}, timeout=self.task.timeout_seconds)
        except asyncio.CancelledError:
            # The SDK cancelled the activity: this worker is shutting down, the server asked,
            # or it no longer knows the attempt (its run was closed).
            await _stopped(agent)
            raise self._stopped_by_sdk() from None
        finally:
            keeper.cancel()
            watch.cancel()
        if not done:
            await _stopped(agent)
        self._stopped_at = datetime.now(UTC)
        error = _error_of(agent)
        if not _holds(lease):
            self.lease_lost()
            raise self.failure(f"LeaseLost: {lease.lost_reason}", ErrorType.LEASE_LOST)
        if lease.stop_reason is not None:
            self.end("warning", "agent_cancelled", message="The agent was stopped",
                     reason=lease.stop_reason)  # fmt: skip
            cancelled = lease.stop_reason == CANCELLED
            kind = ErrorType.CANCELLED if cancelled else ErrorType.AGENT_FAILED
            raise self.failure(lease.stop_reason, kind, final=cancelled)
        if not done:
            limit = self.task.timeout_seconds
            self.end("error", "agent_timed_out", timeout_seconds=limit)
            message = f"TimeoutError: the agent ran longer than its timeout of {limit:g} s"
            raise self.failure(message, ErrorType.AGENT_TIMED_OUT)
        if error is not None:
            permanent = isinstance(error, PermanentError)
            message = f"{type(error).__name__}: {error}"
            self.end("error", "agent_error", error=message, permanent=permanent, exc_info=error)
            raise self.failure(message, ErrorType.AGENT_FAILED, final=permanent)
        return agent.result()

    def _stopped_by_sdk(self) -> ApplicationError:
        details = activity.cancellation_details()
        reason = GONE
        if details is None or details.worker_shutdown:
            reason = "the worker shut down"
        elif details.cancel_requested:
            reason = CANCELLED
        elif details.paused:
            reason = "paused from outside (temporal activity pause)"
        elif details.reset:
            reason = "reset from outside (temporal activity reset)"
        if reason == GONE:
            self.lease.lost_reason = reason
            self.lease_lost()
            return self.failure(f"LeaseLost: {reason}", ErrorType.LEASE_LOST)
        self.end("warning", "agent_cancelled", message="The agent was stopped", reason=reason)
        kind = ErrorType.CANCELLED if reason == CANCELLED else ErrorType.LEASE_LOST
        return self.failure(reason, kind, final=reason == CANCELLED)

    async def _watched(self, agent: asyncio.Future[object]) -> None:
        """Wait for the run's word that it was cancelled, and stop the agent at once. Should
        the watch fail, the lease keeper's heartbeats still carry a cancel (within a
        renewal)."""
        with contextlib.suppress(Exception):
            watch: AttemptWatch = await self.run.execute_update(
                WATCH_ATTEMPT.name, self.task.attempt, result_type=AttemptWatch
            )
            if watch.cancelled:
                self.lease.stop_reason = self.lease.stop_reason or CANCELLED
                agent.cancel()

    # --- after the agent ------------------------------------------------------------------------

    async def report(self, result: object) -> None:
        """Hand the result to the run; ``agent_complete`` only once it has it."""
        update_id = f"report-{self.stop_key[:32]}"
        not_after = datetime.now(UTC) + REPORT_FOR
        report = AttemptReport(self.task.attempt, self.stop_key, result, not_after=not_after)
        # Not an end line: the evidence of a completion whose process is killed between the
        # run taking the result and agent_complete being written.
        self.log.info("agent_reporting", result=result)
        try:
            await reach(
                lambda: self.run.execute_update(
                    REPORT_ATTEMPT.name,
                    report,
                    id=update_id,
                    result_type=type(None),
                    rpc_timeout=timedelta(seconds=5),
                ),
                within=REPORT_FOR,
            )
        except RefusedError as err:
            if err.after_doubt:
                # A try whose answer never came may still be taken, until the run refuses it
                # (past not_after, in a workflow task that ends within its timeout): only
                # then does the history say for good whether the run has the result.
                settled = not_after + REPORT_SETTLES - datetime.now(UTC)
                await asyncio.sleep(max(0.0, settled.total_seconds()))
            if not (err.after_doubt and await accepted(self.run, update_id)):
                self.lease.lost_reason = f"its run no longer takes its result: {err}"
                self.lease_lost()
                raise self.failure(f"LeaseLost: {err}", ErrorType.LEASE_LOST) from None
        # Written once the run has the result, which may be long after the agent stopped (a
        # worker paused while its report was in flight): stopped_at says when it did.
        stopped = self._stopped_at or datetime.now(UTC)
        self.end(
            "info",
            "agent_complete",
            message=f"The {self.task.agent_type} agent finished for {self.task.user_id}",
            result=result,
            stopped_at=stopped.isoformat(),
        )

    async def tell(self, failure: ApplicationError) -> None:
        """Tell the run how the attempt ended, with the stop key, before failing the activity.
        The failure carries the key too, but the server holds back the failure of an attempt
        stopped from outside (paused, reset): then this is the one way the run learns of it, so
        it is sent again while the run cannot be reached (up to :data:`REPORT_FOR`, as a
        result's report): unheard, the run would wait out the attempt's deadline (minutes). A
        run that refuses it, or has ended, needs it no more."""
        kind = AttemptEndKind.FAILED
        if failure.type == ErrorType.CANCELLED:
            kind = AttemptEndKind.CANCELLED
        elif failure.non_retryable:
            kind = AttemptEndKind.FINAL
        report = AttemptReport(self.task.attempt, self.stop_key, kind=kind, reason=failure.message)
        with contextlib.suppress(RefusedError):
            await reach(
                lambda: self.run.execute_update(
                    REPORT_ATTEMPT.name,
                    report,
                    id=f"report-{self.stop_key[:32]}",
                    result_type=type(None),
                    rpc_timeout=timedelta(seconds=5),
                ),
                within=REPORT_FOR,
            )

    # --- end lines --------------------------------------------------------------------------------

    def end(self, level: str, event: str, **fields: Any) -> None:
        """The attempt's end line: written once."""
        if self._ended:
            return
        self._ended = True
        getattr(self.log, level)(event, **fields)

    def lease_lost(self) -> None:
        expired = self.lease.expires_at
        self.end(
            "warning",
            "agent_lease_lost",
            message="The agent stopped: it could no longer be sure it holds the slot",
            reason=self.lease.lost_reason,
            # An agent that stopped before its report was refused stopped then, not now.
            stopped_at=(self._stopped_at or datetime.now(UTC)).isoformat(),
            lease_expired_at=expired.isoformat() if expired else None,
        )

    def closed(self) -> None:
        """The last resort: an attempt that started and is ending without an end line (its
        activity was cancelled as it reported, say) says it stopped."""
        if self._started and not self._ended:
            self.lease.lost_reason = self.lease.lost_reason or "the attempt ended before it said"
            self.lease_lost()

    def failure(self, message: str, kind: ErrorType, *, final: bool = False) -> ApplicationError:
        details = FailureDetails(self.task.attempt, self.stop_key)
        return ApplicationError(message, details, type=kind, non_retryable=final)


def _holds(lease: Lease) -> bool:
    try:
        lease.check()
    except LeaseLostError:
        return False
    return True


async def _stopped(task: asyncio.Future[object]) -> None:
    """Cancel the agent and wait until it has really stopped."""
    task.cancel()
    await asyncio.wait({task})
    _error_of(task)


def _error_of(task: asyncio.Future[Any]) -> BaseException | None:
    """What a finished task raised (None if it returned or was cancelled), read in every case:
    asyncio logs a task whose exception nobody read as an error ("Task exception was never
    retrieved"), and an agent's LeaseLostError after its lease ran out is no news."""
    return None if task.cancelled() else task.exception()
