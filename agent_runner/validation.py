"""Validation of a workflow's input, wherever the start came from.

The REST API validates its request body itself; this guards the workflow against starts from
other systems (another SDK, the ``temporal`` CLI) so bad input fails the run with a reason
instead of retrying a workflow task forever.
"""

from __future__ import annotations

import uuid

from pydantic import TypeAdapter, ValidationError

from agent_runner.models import AgentRunInput, AgentType, ErrorType

SUPPORTED_AGENT_TYPES = tuple(agent_type.value for agent_type in AgentType)
_RUN_INPUT = TypeAdapter(AgentRunInput)


class InvalidRunInputError(ValueError):
    error_type = ErrorType.INVALID_INPUT


class UnsupportedAgentTypeError(InvalidRunInputError):
    error_type = ErrorType.UNSUPPORTED_AGENT_TYPE


def unsupported_agent_type_message(agent_type: object) -> str:
    return (
        f"Unsupported agent_type: {agent_type!r}; "
        f"supported types are {', '.join(SUPPORTED_AGENT_TYPES)}"
    )


def parse_run_input(raw: object) -> AgentRunInput:
    """Turn decoded JSON into an :class:`AgentRunInput`, or raise with a readable reason."""
    if raw is None:
        raise InvalidRunInputError(
            'Invalid input: the workflow needs {"agent_type": ..., "user_id": ...}'
        )
    try:
        run_input = _RUN_INPUT.validate_python(raw, strict=False)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'input'}: {error['msg']}"
            for error in err.errors()
        )
        raise InvalidRunInputError(f"Invalid input: {problems}") from None
    if run_input.agent_type not in SUPPORTED_AGENT_TYPES:
        raise UnsupportedAgentTypeError(unsupported_agent_type_message(run_input.agent_type))
    try:
        uuid.UUID(run_input.user_id)
    except ValueError:
        raise InvalidRunInputError(
            f"Invalid input: user_id must be a UUID, got {run_input.user_id!r}"
        ) from None
    policy = run_input.policy
    if (
        policy.max_attempts < 1
        or min(
            policy.timeout_seconds,
            policy.heartbeat_timeout_seconds,
            policy.retry_initial_interval_seconds,
        )
        <= 0
    ):
        raise InvalidRunInputError(
            "Invalid input: policy.max_attempts must be >= 1 and its durations > 0"
        )
    return run_input
