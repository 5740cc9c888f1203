"""What a run's workflow reads from outside: its input (from whichever client started it),
the arguments of signals, and the failures its agent's activity reports."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ActivityError, ApplicationError, RetryState

with workflow.unsafe.imports_passed_through():
    from agent_runner.models import WORKFLOW_TYPE, AgentRunInput, FailureDetails
    from agent_runner.validation import InvalidRunInputError, parse_run_input, quoted


def decode_input(workflow_type: str, args: Sequence[RawValue]) -> AgentRunInput:
    if workflow_type != WORKFLOW_TYPE:
        raise InvalidRunInputError(
            f"Unsupported workflow type {quoted(workflow_type)} on the agent-runner task queue; "
            f"start {WORKFLOW_TYPE} with one input"
        )
    if len(args) > 1:
        raise InvalidRunInputError(
            f"Invalid input: {WORKFLOW_TYPE} takes one input, got {len(args)}"
        )
    raw: object = None
    if args:
        try:
            raw = workflow.payload_converter().from_payload(args[0].payload)
        except Exception as err:
            encoding = args[0].payload.metadata.get("encoding", b"").decode(errors="replace")
            raise InvalidRunInputError(
                f"Invalid input: cannot decode it (encoding {quoted(encoding)}): "
                f"{type(err).__name__}"
            ) from None
    return parse_run_input(raw)


def not_before(run_input: AgentRunInput) -> datetime | None:
    """Until when this run's agent must wait for an earlier attempt on the slot to stop."""
    if run_input.handoff is None:
        # A start from another system: nobody read the slot before it, so wait one lease.
        return workflow.info().start_time + timedelta(
            seconds=run_input.policy.heartbeat_timeout_seconds
        )
    not_before = run_input.handoff.not_before
    if not_before is not None and not_before.tzinfo is None:
        not_before = not_before.replace(tzinfo=UTC)
    return not_before


def decoded(raw: RawValue, type_hint: Any = None) -> object:
    """A signal's argument, or None when it does not decode (a signal from someone else)."""
    try:
        return workflow.payload_converter().from_payload(raw.payload, type_hint)
    except Exception:
        return None


def failure_reason(err: ActivityError) -> str:
    cause = err.cause
    if isinstance(cause, ApplicationError):
        return cause.message
    if cause is not None:
        return f"{type(cause).__name__}: {cause}"
    return err.message


def failed_attempt(err: ActivityError, max_attempts: int) -> int:
    cause = err.cause
    if isinstance(cause, ApplicationError) and (
        details := FailureDetails.from_details(cause.details)
    ):
        return int(details.attempt)
    if err.retry_state == RetryState.MAXIMUM_ATTEMPTS_REACHED:
        return max_attempts
    return 0
