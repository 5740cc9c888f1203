"""AgentRunWorkflow: one run of one agent. Every run uses the same workflow id (see
:mod:`agent_runner.runs.start`), which is what makes runs one-at-a-time.

The class is registered as the task queue's *dynamic* workflow: it receives every start on the
queue, of any type and with any arguments, undecoded. A start of another type, with the wrong
number of arguments or with a payload that does not decode ends ERROR at once with the reason,
instead of failing its workflow task forever while it holds the singleton.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

from workflows.attempts import Attempts
from workflows.run_inputs import (
    decode_input,
    decoded,
    failed_attempt,
    failure_reason,
)
from workflows.run_inputs import not_before as not_before_of

with workflow.unsafe.imports_passed_through():
    from activities.queue_ops import ClaimNext
    from agent_runner import lease
    from agent_runner.locations import agent_task_queue, client_run_id, queue_id_of, slot_of
    from agent_runner.models import (
        ACTIVITY_NAME,
        AGENT_EVENT_SIGNAL,
        PREDECESSOR_STOPPED_SIGNAL,
        AgentEvent,
        AgentOutput,
        AgentRunInput,
        AgentRunResult,
        AgentTask,
        ErrorType,
        FailureDetails,
        Handoff,
        RunOutcome,
    )
    from agent_runner.queue_types import OFFER_SIGNAL, ClaimResult
    from agent_runner.records import run_memo, run_search_attributes
    from agent_runner.search_attributes import AGENT_TYPE, USER_ID
    from agent_runner.validation import InvalidRunInputError

# Patches (workflow.patched): histories recorded before them replay as they ran.
CANCEL_RECORDS_ATTEMPT = "cancel-records-attempt"
# The server's own backstop per attempt, past the agent's timeout that the activity enforces.
_CLAIM_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=50), maximum_interval=timedelta(seconds=2)
)
_NON_RETRYABLE = [ErrorType.INVALID_INPUT, ErrorType.UNSUPPORTED_AGENT_TYPE]


@workflow.defn(dynamic=True)
class AgentRunWorkflow:
    def __init__(self) -> None:
        self._stopped_predecessors: set[str] = set()
        # The queue to claim the next run from when this one ends: runs wait for this slot.
        self._queue_id: str | None = None
        self._attempts = Attempts()

    @workflow.signal(name=OFFER_SIGNAL)
    def offer(self, queue_id: RawValue) -> None:
        """Runs wait in this queue for a slot: hand this one's slot to them when done."""
        value = decoded(queue_id)
        if isinstance(value, str):
            self._queue_id = value

    @workflow.signal(name=PREDECESSOR_STOPPED_SIGNAL)
    def predecessor_stopped(self, run_id: RawValue) -> None:
        """An attempt of an earlier run on this workflow id says it stopped working."""
        value = decoded(run_id)
        if isinstance(value, str):
            self._stopped_predecessors.add(value)

    @workflow.signal(name=AGENT_EVENT_SIGNAL)
    def agent_event(self, event: RawValue) -> None:
        """An attempt started, made progress or failed: shown in the Web UI's current details
        (and, being a signal, in the history that status streams follow)."""
        value = decoded(event, AgentEvent)
        if isinstance(value, AgentEvent):
            self._attempts.apply(value)

    @workflow.run
    async def run(self, args: Sequence[RawValue]) -> AgentRunResult:
        try:
            run_input = decode_input(workflow.info().workflow_type, args)
        except InvalidRunInputError as err:
            workflow.logger.warning("run_rejected", extra={"reason": str(err), **_log_keys()})
            failure = ApplicationError(
                str(err), FailureDetails(attempt=0), type=err.error_type, non_retryable=True
            )
            await self._hand_over(RunOutcome("ERROR", error=str(err)), fence_base=0)
            raise failure from None
        if run_input.offered:
            self._queue_id = self._queue_id or queue_id_of(workflow.info().workflow_id)
        not_before = not_before_of(run_input)
        fence_base = lease.fence_base(
            workflow.info().start_time, run_input.handoff.fence_floor if run_input.handoff else 0
        )
        self._record_inputs(run_input, not_before, fence_base)
        try:
            await self._wait_for_predecessor(run_input, not_before)
            output = await self._run_agent(run_input, fence_base)
        except ApplicationError as err:
            details = FailureDetails.from_details(err.details)
            outcome = RunOutcome(
                "ERROR", error=err.message, attempt=details.attempt if details else 0
            )
            await self._hand_over(outcome, fence_base)
            raise
        except (CancelledError, asyncio.CancelledError, ActivityError) as err:
            # Cancelled: while it waited (CancelledError), or its agent's attempt was (the only
            # ActivityError _run_agent lets through).
            recorded = workflow.patched(CANCEL_RECORDS_ATTEMPT)
            if isinstance(err, ActivityError) and not recorded:
                raise  # as runs recorded before the patch did
            outcome = RunOutcome("ERROR", error="cancelled", attempt=self._attempts.attempt)
            if recorded:
                # A cancelled execution records no failure: the memo says which attempt the
                # cancel stopped (0: none had started), for its status.
                workflow.upsert_memo({"outcome": outcome})
            await self._hand_over(outcome, fence_base)
            raise
        await self._hand_over(
            RunOutcome("DONE", result=output.result, attempt=output.attempt), fence_base
        )
        return AgentRunResult(
            agent_type=run_input.agent_type,
            user_id=run_input.user_id,
            result=output.result,
            attempt=output.attempt,
        )

    async def _hand_over(self, outcome: RunOutcome, fence_base: int) -> None:
        """Runs wait for this slot: claim the next and continue as it, so the slot's workflow id
        never stands free while the queue is not empty. No queue, or nothing left in it: return
        (the run then closes as usual)."""
        if self._queue_id is None:
            return
        info = workflow.info()
        claimed: ClaimResult = await workflow.execute_local_activity(
            "claim_next",
            ClaimNext(self._queue_id, slot_of(info.workflow_id), info.run_id),
            result_type=ClaimResult,
            start_to_close_timeout=timedelta(seconds=10),
            # A claim that meets the queue continuing as new is refused: ask again at once.
            retry_policy=_CLAIM_RETRY,
        )
        if claimed.entry is None:
            return
        # This execution's own result and failure are not recorded on continue-as-new: the memo
        # keeps how the run ended, for its status.
        workflow.upsert_memo({"outcome": outcome})
        next_run = replace(
            claimed.entry.run_input,
            handoff=Handoff(
                previous_run_id=info.run_id, fence_floor=fence_base + lease.FENCE_STRIDE
            ),
        )
        workflow.continue_as_new(
            next_run, memo=run_memo(next_run), search_attributes=run_search_attributes(next_run)
        )

    async def _wait_for_predecessor(
        self, run_input: AgentRunInput, not_before: datetime | None
    ) -> None:
        """Hold the agent back while an attempt of an earlier run on this slot may still work."""
        if not_before is None or (remaining := (not_before - workflow.now()).total_seconds()) <= 0:
            return
        previous = run_input.handoff.previous_run_id if run_input.handoff else None
        workflow.set_current_details(
            f"Waiting until {not_before:%H:%M:%S} UTC at the latest: an attempt of the previous "
            f"run on this slot ({previous or 'unknown'}) may still be working, and only one "
            "agent may work at a time."
        )
        # Status reads show PENDING meanwhile. On timeout the earlier attempt's lease has run
        # out: it has stopped, or stops before doing more.
        workflow.upsert_memo({"waiting_until": not_before.isoformat()})
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: previous in self._stopped_predecessors, timeout=remaining
            )
        workflow.upsert_memo({"waiting_until": ""})

    async def _run_agent(self, run_input: AgentRunInput, fence_base: int) -> AgentOutput:
        policy = run_input.policy
        self._attempts.max_attempts = policy.max_attempts
        task_queue = agent_task_queue(workflow.info().task_queue, run_input.agent_type)
        workflow.set_current_details(
            f"Running the {run_input.agent_type} agent for {run_input.user_id}: up to "
            f"{policy.max_attempts} attempts of at most {policy.timeout_seconds:g} s, heartbeat "
            f"timeout {policy.heartbeat_timeout_seconds:g} s. Waiting for a worker that has the "
            f"agent (it polls task queue {task_queue})."
        )
        heartbeat_timeout = timedelta(seconds=policy.heartbeat_timeout_seconds)
        try:
            output: AgentOutput = await workflow.execute_activity(
                ACTIVITY_NAME,
                AgentTask(
                    agent_type=run_input.agent_type,
                    user_id=run_input.user_id,
                    run_id=_client_run_id(run_input),
                    params=run_input.params,
                    max_attempts=policy.max_attempts,
                    fence_base=fence_base,
                    timeout_seconds=policy.timeout_seconds,
                ),
                result_type=AgentOutput,
                task_queue=task_queue,
                # The activity stops its agent at timeout_seconds itself; the server's limit is
                # a backstop one heartbeat timeout later, so it never fires on a working agent.
                start_to_close_timeout=timedelta(seconds=policy.timeout_seconds)
                + heartbeat_timeout,
                heartbeat_timeout=heartbeat_timeout,
                # On cancel, wait for the agent to see it and stop, so the run is not reported
                # over while the agent is still working.
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=policy.retry_initial_interval_seconds),
                    maximum_attempts=policy.max_attempts,
                    non_retryable_error_types=_NON_RETRYABLE,
                ),
            )
            return output
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):
                raise
            raise ApplicationError(
                failure_reason(err),
                FailureDetails(attempt=failed_attempt(err, policy.max_attempts)),
                type=ErrorType.AGENT_FAILED,
                non_retryable=True,
            ) from None

    @staticmethod
    def _record_inputs(
        run_input: AgentRunInput, not_before: datetime | None, fence_base: int
    ) -> None:
        """What the next run on this slot reads (the bound it inherits, the fencing floor), and
        for starts from other systems the memo the REST API reads and the search attributes the
        Web UI filters by."""
        memo: dict[str, Any] = {"fence_base": fence_base}
        if "agent_type" not in workflow.info().raw_memo:
            memo |= {"agent_type": run_input.agent_type, "user_id": run_input.user_id}
        if "not_before" not in workflow.info().raw_memo:
            memo["not_before"] = not_before.isoformat() if not_before else ""
        workflow.upsert_memo(memo)
        if workflow.info().typed_search_attributes.get(AGENT_TYPE) is None:
            workflow.upsert_search_attributes(
                [AGENT_TYPE.value_set(run_input.agent_type), USER_ID.value_set(run_input.user_id)]
            )


def _client_run_id(run_input: AgentRunInput) -> str:
    return run_input.queued_id or client_run_id(workflow.info().run_id, run_input.location)


def _log_keys() -> dict[str, Any]:
    return {"run_id": workflow.info().run_id, "agent_type": None, "user_id": None}
