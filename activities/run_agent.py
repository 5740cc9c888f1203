"""The one activity: look the agent up, run it, log its life, report its attempt."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.agents import Agent, AgentContext
from agent_runner.logs import bind_run_context
from agent_runner.models import ACTIVITY_NAME, AgentOutput, AgentTask, ErrorType, FailureDetails

logger = structlog.stdlib.get_logger(__name__)


class AgentActivities:
    """Holds what the activity needs from the worker: the agent registry and the work duration.

    Tests construct it with other agents registered under the same names; the activity code
    that logs, heartbeats and reports failures stays the real one.
    """

    def __init__(self, agents: Mapping[str, Agent], duration_seconds: float) -> None:
        self._agents = agents
        self._duration_seconds = duration_seconds

    @activity.defn(name=ACTIVITY_NAME)
    async def run_agent(self, task: AgentTask) -> AgentOutput:
        info = activity.info()
        bind_run_context(
            agent_type=task.agent_type, user_id=task.user_id, run_id=info.workflow_run_id
        )
        log = logger.bind(attempt=info.attempt)
        agent = self._agents.get(task.agent_type)
        if agent is None:
            log.error(
                "unsupported_agent_type",
                message="Unsupported agent_type",
                supported=sorted(self._agents),
            )
            raise ApplicationError(
                f"Unsupported agent_type: {task.agent_type!r}",
                type=ErrorType.UNSUPPORTED_AGENT_TYPE,
                non_retryable=True,
            )

        log.info("agent_start", message=f"Hello, I am a {task.agent_type} agent for {task.user_id}")
        context = AgentContext(task.agent_type, task.user_id, self._duration_seconds, log)
        try:
            result = await agent(context)
        except asyncio.CancelledError:
            log.warning("agent_cancelled", message="The agent was cancelled while working")
            raise
        except Exception as err:
            log.exception("agent_error", error=f"{type(err).__name__}: {err}")
            raise ApplicationError(
                f"{type(err).__name__}: {err}",
                FailureDetails(attempt=info.attempt),
                type=ErrorType.AGENT_FAILED,
            ) from err
        log.info(
            "agent_complete",
            message=f"The {task.agent_type} agent finished for {task.user_id}",
            result=result,
        )
        return AgentOutput(result=result, attempt=info.attempt)
