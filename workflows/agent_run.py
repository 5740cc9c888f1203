"""AgentRunWorkflow: one run of one agent. Every run uses the same workflow id (see
:mod:`agent_runner.runs.start`), which is what makes runs one-at-a-time."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, RetryState

with workflow.unsafe.imports_passed_through():
    from agent_runner.models import (
        ACTIVITY_NAME,
        WORKFLOW_TYPE,
        AgentOutput,
        AgentRunInput,
        AgentRunResult,
        AgentTask,
        ErrorType,
        FailureDetails,
    )
    from agent_runner.search_attributes import AGENT_TYPE, USER_ID
    from agent_runner.validation import InvalidRunInputError, parse_run_input


@workflow.defn(name=WORKFLOW_TYPE)
class AgentRunWorkflow:
    @workflow.run
    async def run(self, raw_input: Any = None) -> AgentRunResult:
        # The input is typed loosely on purpose: a start from another system with a payload
        # that does not decode must fail this run with a reason, not its workflow task forever.
        try:
            run_input = parse_run_input(raw_input)
        except InvalidRunInputError as err:
            workflow.logger.warning("run_rejected", extra={"reason": str(err), **_log_keys()})
            raise ApplicationError(
                str(err), FailureDetails(attempt=0), type=err.error_type, non_retryable=True
            ) from None
        self._record_inputs(run_input)
        policy = run_input.policy
        workflow.set_current_details(
            f"Running the {run_input.agent_type} agent for {run_input.user_id}: "
            f"up to {policy.max_attempts} attempts, heartbeat timeout "
            f"{policy.heartbeat_timeout_seconds:g} s. Attempts and failures are in the history "
            "(ActivityTaskStarted / pending activity)."
        )
        try:
            output = await workflow.execute_activity(
                ACTIVITY_NAME,
                AgentTask(agent_type=run_input.agent_type, user_id=run_input.user_id),
                result_type=AgentOutput,
                start_to_close_timeout=timedelta(seconds=policy.timeout_seconds),
                heartbeat_timeout=timedelta(seconds=policy.heartbeat_timeout_seconds),
                # On cancel, wait for the agent to see it (through its heartbeat) and stop, so
                # the run is not reported over while the agent is still working.
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=policy.retry_initial_interval_seconds),
                    maximum_attempts=policy.max_attempts,
                    non_retryable_error_types=[
                        ErrorType.INVALID_INPUT,
                        ErrorType.UNSUPPORTED_AGENT_TYPE,
                    ],
                ),
            )
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):
                raise
            raise ApplicationError(
                _failure_reason(err),
                FailureDetails(attempt=_failed_attempt(err, policy.max_attempts)),
                type=ErrorType.AGENT_FAILED,
                non_retryable=True,
            ) from None
        return AgentRunResult(
            agent_type=run_input.agent_type,
            user_id=run_input.user_id,
            result=output.result,
            attempt=output.attempt,
        )

    @staticmethod
    def _record_inputs(run_input: AgentRunInput) -> None:
        """Starts from other systems may lack the memo the REST API reads and the search
        attributes the Web UI filters by: add them."""
        if "agent_type" not in workflow.memo():
            workflow.upsert_memo({"agent_type": run_input.agent_type, "user_id": run_input.user_id})
        if workflow.info().typed_search_attributes.get(AGENT_TYPE) is None:
            workflow.upsert_search_attributes(
                [AGENT_TYPE.value_set(run_input.agent_type), USER_ID.value_set(run_input.user_id)]
            )


def _log_keys() -> dict[str, Any]:
    return {"run_id": workflow.info().run_id, "agent_type": None, "user_id": None}


def _failure_reason(err: ActivityError) -> str:
    cause = err.cause
    if isinstance(cause, ApplicationError):
        return cause.message
    if cause is not None:
        return f"{type(cause).__name__}: {cause}"
    return err.message


def _failed_attempt(err: ActivityError, max_attempts: int) -> int:
    cause = err.cause
    if isinstance(cause, ApplicationError) and (
        details := FailureDetails.from_details(cause.details)
    ):
        return details.attempt
    if err.retry_state == RetryState.MAXIMUM_ATTEMPTS_REACHED:
        return max_attempts
    return 0
