"""The one activity: run an agent for one attempt of a run, and never let it work, or report,
where its run does not count it.

Each dispatch of an attempt (see :mod:`workflows.attempt_book`):

1. confirms its lease (a first acknowledged heartbeat) and claims the attempt from its run,
   committing to a stop key; it starts its agent only once its run says so;
2. works beside its lease keeper (the agent is cancelled the moment the lease is lost or the
   server asks it to stop) and a watch on its run (which answers at once when the run is
   cancelled);
3. ends with exactly one end line: ``agent_complete`` (only once its run accepted the result
   and the stop key), ``agent_error``, ``agent_cancelled``, ``agent_timed_out`` or
   ``agent_lease_lost``; every failure carries the stop key, the dispatch's word that its agent
   has stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from pydantic import BaseModel
from temporalio import activity
from temporalio.client import (
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.context import RunContext, RunEvents
from activities.lease import Lease
from agent_runner.agent_registry import AgentRegistry, InvalidParamsError, UnknownAgentError
from agent_runner.agents import Agent, LeaseLostError, PermanentError
from agent_runner.contract import (
    CLAIM_ATTEMPT,
    REPORT_ATTEMPT,
    RUN_AGENT_ACTIVITY,
    RUN_WORKFLOW,
    WATCH_ATTEMPT,
    AgentOutput,
    AgentTask,
    AttemptClaim,
    AttemptEndKind,
    AttemptGo,
    AttemptReport,
    AttemptWatch,
    ErrorType,
    FailureDetails,
)
from agent_runner.ids import place_of
from agent_runner.lease import commitment
from agent_runner.logs import bind_run_context

logger = structlog.stdlib.get_logger(__name__)
Log = structlog.stdlib.BoundLogger
# The server no longer knows the attempt: its run was closed, or the attempt timed out there.
_GONE = "the server no longer knows this attempt"
# How long a dispatch keeps trying to reach its run (to claim, or to report) before giving up.
_REACH_FOR = timedelta(minutes=2)


class AgentActivities:
    """Holds what the activity needs from the worker: the agents it serves.

    Tests construct it with other agents registered under the real names; the activity code
    that claims, holds the lease, logs and reports stays the real one.
    """

    def __init__(self, agents: AgentRegistry) -> None:
        self._agents = agents

    @activity.defn(name=RUN_AGENT_ACTIVITY)
    async def run_agent(self, task: AgentTask) -> AgentOutput:
        info = activity.info()
        bind_run_context(agent_type=task.agent_type, user_id=task.user_id, run_id=task.run_id)
        log: Log = logger.bind(attempt=task.attempt)
        place = place_of(info.workflow_id) if info.workflow_id else None
        if info.workflow_type != RUN_WORKFLOW or place is None or place.slot is None:
            # A standalone activity, or one another workflow scheduled: no run holds a slot for
            # it, so it never starts an agent.
            log.warning("agent_not_started", reason="not an attempt of a run on its slot")
            raise ApplicationError(
                f"{RUN_AGENT_ACTIVITY} runs only as an attempt of an {RUN_WORKFLOW} on its slot",
                type=ErrorType.ATTEMPT_REFUSED,
                non_retryable=True,
            )
        agent, params = self._agent_and_params(task, log)
        assert info.workflow_id is not None
        run = activity.client().get_workflow_handle(info.workflow_id, run_id=info.workflow_run_id)
        lease = Lease(activity.client(), task.heartbeat_timeout_seconds)
        stop_key = secrets.token_hex(32)
        go = await _claimed(run, task, stop_key, lease, log)
        log = log.bind(fencing_token=go.fencing_token)
        log.info(
            "agent_start",
            message=f"Hello, I am a {task.agent_type} agent for {task.user_id}",
            lease_seconds=lease.duration,
        )
        events = RunEvents(activity.client(), info)
        context = RunContext(
            task.run_id,
            task.agent_type,
            task.user_id,
            task.attempt,
            go.fencing_token,
            log,
            lease,
            events,
        )
        try:
            result = await _supervised(agent.run(context, params), lease, run, task, stop_key, log)
        except ApplicationError as failure:
            await _told(run, task, stop_key, failure)
            raise
        finally:
            events.close()
        await _reported(run, task, stop_key, result, log)
        # The run has the result already: no completion follows (it may have closed).
        activity.raise_complete_async()

    def _agent_and_params(self, task: AgentTask, log: Log) -> tuple[Agent[Any], BaseModel]:
        try:
            return self._agents[task.agent_type], self._agents.params(task.agent_type, task.params)
        except UnknownAgentError:
            # Only workers that have the agent poll its task queue: a deployment mistake.
            log.error(
                "unsupported_agent_type",
                message="Unsupported agent_type",
                supported=sorted(self._agents),
            )
            raise ApplicationError(
                f"Unsupported agent_type: {task.agent_type!r}",
                FailureDetails(task.attempt),
                type=ErrorType.UNSUPPORTED_AGENT_TYPE,
                non_retryable=True,
            ) from None
        except InvalidParamsError as err:
            log.warning("invalid_params", reason=str(err))
            raise ApplicationError(
                str(err),
                FailureDetails(task.attempt),
                type=ErrorType.INVALID_INPUT,
                non_retryable=True,
            ) from None


async def _claimed(
    run: WorkflowHandle[Any, Any], task: AgentTask, stop_key: str, lease: Lease, log: Log
) -> AttemptGo:
    """Confirm the lease, claim the attempt (holding the lease meanwhile), and wait as long as
    the run says."""
    try:
        await lease.confirm()
        go: AttemptGo = await _while_held(
            lease,
            _reach(
                lambda: run.execute_update(
                    CLAIM_ATTEMPT.name,
                    AttemptClaim(task.attempt, commitment(stop_key)),
                    id=f"claim-{stop_key[:32]}",
                    result_type=AttemptGo,
                    rpc_timeout=timedelta(seconds=lease.renew_every),
                )
            ),
        )
        if go.wait_seconds > 0:
            # An earlier dispatch of this attempt may still work: hold the lease, start later.
            log.warning(
                "agent_waiting",
                reason="an earlier dispatch may be working",
                seconds=go.wait_seconds,
            )
            await _while_held(lease, asyncio.sleep(go.wait_seconds))
    except (LeaseLostError, _RefusedError) as err:
        # Never started: the run was closed, or moved on, before this dispatch began.
        log.warning("agent_not_started", reason=str(err))
        raise ApplicationError(
            f"AttemptRefused: {err}",
            FailureDetails(task.attempt, stop_key),
            type=ErrorType.ATTEMPT_REFUSED,
        ) from None
    return go


async def _while_held(lease: Lease, work: Awaitable[Any]) -> Any:
    """``work``'s result, renewing the lease meanwhile; :class:`LeaseLostError` if the lease is
    lost (or the attempt is stopped) first."""
    task = asyncio.ensure_future(work)
    keeper = asyncio.ensure_future(lease.keep(on_lost=task.cancel, on_stop=task.cancel))
    try:
        await asyncio.wait({task})
    finally:
        keeper.cancel()
    if task.cancelled() or lease.stop_reason is not None:
        raise LeaseLostError(lease.lost_reason or lease.stop_reason or "stopped")
    return task.result()


async def _supervised(
    work: Awaitable[object],
    lease: Lease,
    run: WorkflowHandle[Any, Any],
    task: AgentTask,
    stop_key: str,
    log: Log,
) -> object:
    """Run the agent beside its lease keeper and its run's watch; its result, only while the
    lease holds. Every other end logs its end line and raises with the stop key."""
    agent = asyncio.ensure_future(work)
    keeper = asyncio.ensure_future(lease.keep(on_lost=agent.cancel, on_stop=agent.cancel))
    watch = asyncio.ensure_future(_watched(run, task.attempt, lease, agent))
    try:
        done, _ = await asyncio.wait({agent}, timeout=task.timeout_seconds)
    except asyncio.CancelledError:
        # The SDK cancelled the activity: this worker is shutting down, the server asked, or
        # it no longer knows the attempt (its run was closed).
        await _stopped(agent)
        reason = _sdk_cancel_reason()
        if reason == _GONE:
            lease.lost_reason = reason
            _log_lease_lost(lease, log)
            raise _failure(task, stop_key, f"LeaseLost: {reason}", ErrorType.LEASE_LOST) from None
        log.warning("agent_cancelled", message="The agent was stopped", reason=reason)
        kind = ErrorType.CANCELLED if reason == "cancelled" else ErrorType.LEASE_LOST
        raise _failure(task, stop_key, reason, kind, final=kind == ErrorType.CANCELLED) from None
    finally:
        keeper.cancel()
        watch.cancel()
    if not done:
        await _stopped(agent)
    if not _holds(lease):
        _log_lease_lost(lease, log)
        raise _failure(task, stop_key, f"LeaseLost: {lease.lost_reason}", ErrorType.LEASE_LOST)
    if lease.stop_reason is not None:
        log.warning("agent_cancelled", message="The agent was stopped", reason=lease.stop_reason)
        kind = ErrorType.CANCELLED if lease.stop_reason == "cancelled" else ErrorType.AGENT_FAILED
        raise _failure(task, stop_key, lease.stop_reason, kind, final=kind == ErrorType.CANCELLED)
    if not done:
        log.error("agent_timed_out", timeout_seconds=task.timeout_seconds)
        message = (
            f"TimeoutError: the agent ran longer than its timeout of {task.timeout_seconds:g} s"
        )
        raise _failure(task, stop_key, message, ErrorType.AGENT_TIMED_OUT)
    error = agent.exception()
    if error is not None:
        permanent = isinstance(error, PermanentError)
        log.error(
            "agent_error",
            error=f"{type(error).__name__}: {error}",
            permanent=permanent,
            exc_info=error,
        )
        message = f"{type(error).__name__}: {error}"
        raise _failure(task, stop_key, message, ErrorType.AGENT_FAILED, final=permanent)
    return agent.result()


async def _watched(
    run: WorkflowHandle[Any, Any], attempt: int, lease: Lease, agent: asyncio.Future[object]
) -> None:
    """Wait for the run's word that it was cancelled, and stop the agent at once. Should the
    watch fail, the lease keeper's heartbeats still carry a cancel (within a renewal)."""
    with contextlib.suppress(Exception):
        watch: AttemptWatch = await run.execute_update(
            WATCH_ATTEMPT.name, attempt, result_type=AttemptWatch
        )
        if watch.cancelled:
            lease.stop_reason = lease.stop_reason or "cancelled"
            agent.cancel()


async def _reported(
    run: WorkflowHandle[Any, Any], task: AgentTask, stop_key: str, result: object, log: Log
) -> None:
    """Hand the result to the run; log ``agent_complete`` only once it has it."""
    report = AttemptReport(task.attempt, stop_key, result)
    update_id = f"report-{stop_key[:32]}"
    try:
        await _reach(
            lambda: run.execute_update(
                REPORT_ATTEMPT.name,
                report,
                id=update_id,
                result_type=type(None),
                rpc_timeout=timedelta(seconds=5),
            )
        )
    except _RefusedError as err:
        if err.after_doubt and await _accepted(run, update_id):
            _log_complete(task, result, log)
            return
        log.warning(
            "agent_lease_lost",
            message="The agent finished, but its run no longer takes its result",
            reason=str(err),
            stopped_at=datetime.now(UTC).isoformat(),
        )
        raise _failure(task, stop_key, f"LeaseLost: {err}", ErrorType.LEASE_LOST) from None
    _log_complete(task, result, log)


def _log_complete(task: AgentTask, result: object, log: Log) -> None:
    log.info(
        "agent_complete",
        message=f"The {task.agent_type} agent finished for {task.user_id}",
        result=result,
    )


async def _accepted(run: WorkflowHandle[Any, Any], update_id: str) -> bool:
    """Whether the run's history holds the acceptance of our update (a try whose answer was
    lost may have been accepted before the run closed). Read until the server answers."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _REACH_FOR.total_seconds()
    while True:
        try:
            async for event in run.fetch_history_events():
                accepted = event.workflow_execution_update_accepted_event_attributes
                if accepted.accepted_request.meta.update_id == update_id:
                    return True
            return False
        except RPCError:
            if loop.time() > deadline:
                return False
        await asyncio.sleep(1.0)


async def _told(
    run: WorkflowHandle[Any, Any], task: AgentTask, stop_key: str, failure: ApplicationError
) -> None:
    """Tell the run how the attempt ended, with the stop key, before failing the activity:
    best effort (the failure carries the key too), but the one way the run learns of an attempt
    stopped from outside (paused, reset), whose failure the server holds back."""
    kind = AttemptEndKind.FAILED
    if failure.type == ErrorType.CANCELLED:
        kind = AttemptEndKind.CANCELLED
    elif failure.non_retryable:
        kind = AttemptEndKind.FINAL
    report = AttemptReport(task.attempt, stop_key, kind=kind, reason=failure.message)
    with contextlib.suppress(Exception):
        await run.execute_update(
            REPORT_ATTEMPT.name,
            report,
            id=f"report-{stop_key[:32]}",
            result_type=type(None),
            rpc_timeout=timedelta(seconds=2),
        )


class _RefusedError(Exception):
    """The run said no, or is gone. ``after_doubt``: an earlier try's answer never came (it
    may have been taken)."""

    def __init__(self, reason: str, *, after_doubt: bool = False) -> None:
        super().__init__(reason)
        self.after_doubt = after_doubt


async def _reach(call: Any) -> Any:
    """An update to the attempt's own run, tried again (with its same id) while the server
    cannot be reached, for up to :data:`_REACH_FOR`; :class:`_RefusedError` when the run
    refuses it or no longer runs."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _REACH_FOR.total_seconds()
    pause = 0.1
    doubt = False
    while True:
        try:
            return await call()
        except WorkflowUpdateFailedError as err:
            raise _RefusedError(str(err.cause or err), after_doubt=doubt) from None
        except WorkflowUpdateRPCTimeoutOrCancelledError:
            doubt = True
            if loop.time() > deadline:
                raise _RefusedError(
                    "its run could not be reached in time", after_doubt=doubt
                ) from None
        except RPCError as err:
            if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
                raise _RefusedError(
                    f"its run has ended ({err.message})", after_doubt=doubt
                ) from None
            doubt = True
            if loop.time() > deadline:
                raise _RefusedError(
                    f"its run could not be reached: {err.message}", after_doubt=doubt
                ) from None
        await asyncio.sleep(pause)
        pause = min(pause * 2, 2.0)


def _sdk_cancel_reason() -> str:
    details = activity.cancellation_details()
    if details is None or details.worker_shutdown:
        return "the worker shut down"
    if details.cancel_requested:
        return "cancelled"
    if details.paused:
        return "paused from outside (temporal activity pause)"
    if details.reset:
        return "reset from outside (temporal activity reset)"
    return _GONE



def _holds(lease: Lease) -> bool:
    try:
        lease.check()
    except LeaseLostError:
        return False
    return True


def _log_lease_lost(lease: Lease, log: Log) -> None:
    expired = lease.expires_at
    log.warning(
        "agent_lease_lost",
        message="The agent stopped: it could no longer be sure it holds the slot",
        reason=lease.lost_reason,
        stopped_at=datetime.now(UTC).isoformat(),
        lease_expired_at=expired.isoformat() if expired else None,
    )


def _failure(
    task: AgentTask, stop_key: str, message: str, kind: ErrorType, *, final: bool = False
) -> ApplicationError:
    return ApplicationError(
        message, FailureDetails(task.attempt, stop_key), type=kind, non_retryable=final
    )


async def _stopped(task: asyncio.Future[object]) -> None:
    """Cancel the agent and wait until it has really stopped."""
    task.cancel()
    await asyncio.wait({task})
