"""The one activity: look the agent up, hold the slot's lease while it works, log its life,
report its attempt, and never report a result the slot's lease no longer covers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any

import structlog
from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.context import RunContext, RunEvents
from activities.lease import Lease
from agent_runner.agent_registry import AgentRegistry, InvalidParamsError, UnknownAgentError
from agent_runner.agents import Agent, LeaseLostError, PermanentError
from agent_runner.lease import fencing_token
from agent_runner.logs import bind_run_context
from agent_runner.models import (
    ACTIVITY_NAME,
    PREDECESSOR_STOPPED_SIGNAL,
    AgentOutput,
    AgentTask,
    ErrorType,
    FailureDetails,
    RunPolicy,
)

logger = structlog.stdlib.get_logger(__name__)


class AgentActivities:
    """Holds what the activity needs from the worker: the agents it serves.

    Tests construct it with other agents registered under the real names; the activity code
    that holds the lease, logs and reports failures stays the real one.
    """

    def __init__(self, agents: AgentRegistry) -> None:
        self._agents = agents

    @activity.defn(name=ACTIVITY_NAME)
    async def run_agent(self, task: AgentTask) -> AgentOutput:
        info = activity.info()
        run_id = task.run_id or info.workflow_run_id or ""
        bind_run_context(agent_type=task.agent_type, user_id=task.user_id, run_id=run_id)
        token = fencing_token(task.fence_base, info.attempt)
        log = logger.bind(attempt=info.attempt, fencing_token=token)
        agent, params = self._agent_and_params(task, log)
        lease = Lease(activity.client(), _lease_seconds(info))
        try:
            await lease.confirm()
        except LeaseLostError as err:
            # Never started: the run was closed (or the attempt given up on) before it began.
            log.warning("agent_not_started", reason=str(err))
            await _announce_stopped(info)
            raise _lease_lost(lease, info.attempt) from None
        if lease.cancel_requested:
            # Cancelled before it began (its worker was paused, say): never start the agent.
            log.warning("agent_not_started", reason="the run was cancelled")
            await _until_cancelled(lease)
        events = RunEvents(activity.client(), info)
        await events.started(info.attempt)
        log.info(
            "agent_start",
            message=f"Hello, I am a {task.agent_type} agent for {task.user_id}",
            lease_seconds=lease.duration,
        )
        context = RunContext(
            run_id, task.agent_type, task.user_id, info.attempt, token, log, lease, events
        )
        try:
            result = await _supervise(
                agent.run(context, params), lease, task.timeout_seconds, log, info
            )
        except ApplicationError as err:
            retrying = not err.non_retryable and info.attempt < task.max_attempts
            await events.failed(info.attempt, err.message, retrying=retrying)
            raise
        finally:
            events.close()
        log.info(
            "agent_complete",
            message=f"The {task.agent_type} agent finished for {task.user_id}",
            result=result,
        )
        return AgentOutput(result=result, attempt=info.attempt)

    def _agent_and_params(
        self, task: AgentTask, log: structlog.stdlib.BoundLogger
    ) -> tuple[Agent[Any], BaseModel]:
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
                type=ErrorType.UNSUPPORTED_AGENT_TYPE,
                non_retryable=True,
            ) from None
        except InvalidParamsError as err:
            log.warning("invalid_params", reason=str(err))
            raise ApplicationError(
                str(err),
                FailureDetails(attempt=0),
                type=ErrorType.INVALID_INPUT,
                non_retryable=True,
            ) from None


def _lease_seconds(info: activity.Info) -> float:
    timeout = info.heartbeat_timeout
    return timeout.total_seconds() if timeout else RunPolicy.heartbeat_timeout_seconds


async def _supervise(
    work: Awaitable[object],
    lease: Lease,
    timeout_seconds: float,
    log: structlog.stdlib.BoundLogger,
    info: activity.Info,
) -> object:
    """Run the agent beside its lease keeper; return its result only while the lease holds."""
    agent_task = asyncio.ensure_future(work)
    keeper = asyncio.ensure_future(lease.keep(on_lost=lambda: _cancel(agent_task)))
    try:
        done, _ = await asyncio.wait({agent_task}, timeout=timeout_seconds)
    except asyncio.CancelledError:
        # The SDK cancelled the attempt: a cancel request, the run gone, or worker shutdown.
        await _stopped(agent_task)
        details = activity.cancellation_details()
        if details is not None and details.not_found:
            lease.lost_reason = "the server no longer knows this attempt"
            await _announce_lost(lease, log, info)
        else:
            log.warning("agent_cancelled", message="The agent was cancelled while working")
        raise
    finally:
        keeper.cancel()
    if not done:
        await _stopped(agent_task)
    if not _holds(lease):
        await _announce_lost(lease, log, info)
        raise _lease_lost(lease, info.attempt)
    if not done:
        log.error("agent_timed_out", timeout_seconds=timeout_seconds)
        raise ApplicationError(
            f"TimeoutError: the agent ran longer than its timeout of {timeout_seconds:g} s",
            FailureDetails(attempt=info.attempt),
            type=ErrorType.AGENT_TIMED_OUT,
        )
    error = agent_task.exception()
    if error is not None:
        raise _agent_failed(error, log, info.attempt) from error
    # Before the result goes out, make sure the server still counts this attempt as current.
    with contextlib.suppress(LeaseLostError):
        await lease.confirm()
    if not _holds(lease):
        await _announce_lost(lease, log, info)
        raise _lease_lost(lease, info.attempt)
    return agent_task.result()


def _agent_failed(
    error: BaseException, log: structlog.stdlib.BoundLogger, attempt: int
) -> ApplicationError:
    """The agent raised: log its stack, and fail the attempt (for good on a PermanentError)."""
    permanent = isinstance(error, PermanentError)
    log.error(
        "agent_error", error=f"{type(error).__name__}: {error}", permanent=permanent, exc_info=error
    )
    return ApplicationError(
        f"{type(error).__name__}: {error}",
        FailureDetails(attempt=attempt),
        type=ErrorType.AGENT_FAILED,
        non_retryable=permanent,
    )


def _holds(lease: Lease) -> bool:
    try:
        lease.check()
    except LeaseLostError:
        return False
    return True


async def _announce_lost(
    lease: Lease, log: structlog.stdlib.BoundLogger, info: activity.Info
) -> None:
    expired = lease.expires_at
    log.warning(
        "agent_lease_lost",
        message="The agent stopped: it could no longer be sure it holds the slot",
        reason=lease.lost_reason,
        stopped_at=datetime.now(UTC).isoformat(),
        lease_expired_at=expired.isoformat() if expired else None,
    )
    await _announce_stopped(info)


def _lease_lost(lease: Lease, attempt: int) -> ApplicationError:
    return ApplicationError(
        f"LeaseLost: {lease.lost_reason}",
        FailureDetails(attempt=attempt),
        type=ErrorType.LEASE_LOST,
    )


async def _until_cancelled(lease: Lease) -> None:
    """Wait for the SDK to cancel this attempt (its own heartbeat carries the cancel), so the
    attempt is reported cancelled, not failed. Gives up when the lease runs out."""
    while True:
        activity.heartbeat()
        await asyncio.sleep(lease.renew_every)
        try:
            await lease.confirm()
        except LeaseLostError:
            raise _lease_lost(lease, activity.info().attempt) from None


def _cancel(task: asyncio.Future[object]) -> None:
    task.cancel()


async def _stopped(task: asyncio.Future[object]) -> None:
    """Cancel the agent and wait until it has really stopped."""
    task.cancel()
    await asyncio.wait({task})


async def _announce_stopped(info: activity.Info) -> None:
    """Tell the run now holding this slot, if any, that this attempt no longer works: it may
    start its agent without waiting for this attempt's lease to run out. Best effort."""
    if info.workflow_id is None:
        return
    client = activity.client()
    with contextlib.suppress(Exception):
        await client.get_workflow_handle(info.workflow_id).signal(
            PREDECESSOR_STOPPED_SIGNAL, info.workflow_run_id
        )
