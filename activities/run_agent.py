"""The one activity: run an agent for one attempt of a run on its slot (see
:mod:`activities.attempt` for the rules each dispatch keeps). It refuses to run anywhere else: a
standalone activity or one another workflow scheduled starts no agent."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import structlog
from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.attempt import Attempt, Log
from activities.context import RunContext, RunEvents
from agent_runner.agent_registry import AgentRegistry, InvalidParamsError, UnknownAgentError
from agent_runner.agents import Agent
from agent_runner.contract import (
    RUN_AGENT_ACTIVITY,
    RUN_WORKFLOW,
    AgentOutput,
    AgentTask,
    ErrorType,
    FailureDetails,
)
from agent_runner.ids import place_of
from agent_runner.logs import bind_run_context

logger = structlog.stdlib.get_logger(__name__)


class AgentActivities:
    """Holds what the activity needs from the worker: the agents it serves, and the deployment
    (base workflow id) whose runs it serves them to; None: any deployment's.

    Tests construct it with other agents registered under the real names; the activity code
    that claims, holds the lease, logs and reports stays the real one.
    """

    def __init__(self, agents: AgentRegistry, deployment: str | None) -> None:
        self._agents = agents
        self._deployment = deployment

    @activity.defn(name=RUN_AGENT_ACTIVITY)
    async def run_agent(self, task: AgentTask) -> AgentOutput:
        info = activity.info()
        bind_run_context(agent_type=task.agent_type, user_id=task.user_id, run_id=task.run_id)
        log: Log = logger.bind(attempt=task.attempt)
        place = place_of(info.workflow_id) if info.workflow_id else None
        if info.workflow_type != RUN_WORKFLOW or place is None or place.slot is None:
            log.warning("agent_not_started", reason="not an attempt of a run on its slot")
            raise ApplicationError(
                f"{RUN_AGENT_ACTIVITY} runs only as an attempt of an {RUN_WORKFLOW} on its slot",
                type=ErrorType.ATTEMPT_REFUSED,
                non_retryable=True,
            )
        if self._deployment is not None and place.scope.base != self._deployment:
            # Another deployment on our task queue, made up by another client: its record's N
            # is not ours to trust, and its runs are not ours to count.
            log.warning("agent_not_started", reason=f"a run of deployment {place.scope.base!r}")
            raise ApplicationError(
                f"this worker runs agents for deployment {self._deployment!r} only, not for "
                f"{place.scope.base!r}",
                type=ErrorType.ATTEMPT_REFUSED,
                non_retryable=True,
            )
        agent, params = self._agent_and_params(task, log)
        run = activity.client().get_workflow_handle(
            str(info.workflow_id), run_id=info.workflow_run_id
        )
        attempt = Attempt(run, task, log)
        go = await attempt.claim()
        attempt.started(go.fencing_token)
        events = RunEvents(activity.client(), info)
        context = RunContext(
            task.run_id,
            task.agent_type,
            task.user_id,
            task.attempt,
            go.fencing_token,
            attempt.log,
            attempt.lease,
            events,
        )
        try:
            try:
                result = await attempt.supervise(agent.run(context, params))
            except ApplicationError as failure:
                await _telling(attempt, failure)
                raise failure from None
            finally:
                events.close()
            # The agent has stopped; heartbeats go on (the SDK cancels a silent attempt).
            await _beating(attempt.report(result))
        finally:
            attempt.closed()
        # Its run has the result already: no completion follows (the run may have closed).
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


async def _heartbeating(task: asyncio.Future[Any]) -> None:
    """Until ``task`` is done, heartbeating through the SDK once a second (the SDK cancels a
    silent attempt)."""
    while not (await asyncio.wait({task}, timeout=1.0))[0]:
        activity.heartbeat()


async def _beating(report: Awaitable[Any]) -> Any:
    """``report``'s result, heartbeating meanwhile.

    Cancelled (the SDK cancels an attempt the server timed out, as when its worker was paused
    while the report was in flight), the report is let settle before the cancel goes on: the
    run may have taken it all the same, and the end line must say which (found by the
    randomized run: a DONE run whose only attempt logged agent_lease_lost)."""
    task = asyncio.ensure_future(report)
    try:
        await _heartbeating(task)
    except asyncio.CancelledError:
        await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # read, so asyncio does not log it as never retrieved
        raise
    return task.result()


async def _telling(attempt: Attempt, failure: ApplicationError) -> None:
    """:meth:`Attempt.tell`, heartbeating meanwhile. A cancel from the SDK because the server
    paused or reset the attempt does not cut it short: that is when the run needs the word most
    (the server holds the failure back), and the SDK's cancel comes with the first answer after
    a partition heals, before the word gets through. Any other cancel (the worker shuts down)
    stops it: the failure carries the stop key too."""
    task = asyncio.ensure_future(attempt.tell(failure))
    while True:
        try:
            await _heartbeating(task)
        except asyncio.CancelledError:
            details = activity.cancellation_details()
            if details is None or not (details.paused or details.reset):
                task.cancel()
                await asyncio.wait({task})
                return
            continue
        task.exception()  # read: tell swallows what it expects, the rest is no news here
        return
