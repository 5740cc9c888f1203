"""Validation of a workflow's input, wherever the start came from.

The REST API validates its request body itself; this guards the workflow against starts from
other systems (another SDK, the ``temporal`` CLI) so bad input fails the run with a reason
instead of retrying a workflow task forever. Every number that reaches Temporal is bounded
here: a timeout of 1e308 s or 2^40 attempts cannot even be scheduled.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterable
from dataclasses import replace

from pydantic import TypeAdapter, ValidationError

from agent_runner.lease import MIN_HEARTBEAT_TIMEOUT_SECONDS
from agent_runner.locations import AGENT_TYPE_PATTERN
from agent_runner.models import AgentRunInput, ErrorType, RunPolicy

# Bounds of a run policy; the settings use the same ones.
MAX_ATTEMPTS = 100
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600.0
MAX_HEARTBEAT_TIMEOUT_SECONDS = 3600.0
MAX_RETRY_INTERVAL_SECONDS = 3600.0
# Reasons quote at most this much of a bad value.
MAX_QUOTED = 64
_RUN_INPUT = TypeAdapter(AgentRunInput)


class InvalidRunInputError(ValueError):
    error_type = ErrorType.INVALID_INPUT


class UnsupportedAgentTypeError(InvalidRunInputError):
    error_type = ErrorType.UNSUPPORTED_AGENT_TYPE


def quoted(value: object) -> str:
    """``repr(value)``, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= MAX_QUOTED else f"{text[: MAX_QUOTED - 5]}...{text[-1]}"


def shortened(text: str, limit: int = 4 * MAX_QUOTED) -> str:
    """``text`` cut to ``limit`` characters, so a reason never grows with a bad value."""
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def unsupported_agent_type_message(agent_type: object, supported: Iterable[str]) -> str:
    return (
        f"Unsupported agent_type: {quoted(agent_type)}; "
        f"supported types are {', '.join(sorted(supported))}"
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
            for error in err.errors(include_input=False)[:5]
        )
        raise InvalidRunInputError(f"Invalid input: {problems}") from None
    # Whether an agent of that name exists is for the API (which refuses unknown ones) and the
    # workers (a run waits for a worker that has its agent) to say; here only its shape.
    if not re.match(AGENT_TYPE_PATTERN, run_input.agent_type):
        raise UnsupportedAgentTypeError(
            f"Unsupported agent_type: {quoted(run_input.agent_type)}; an agent type is "
            "lowercase letters, digits and dashes"
        )
    try:
        user_id = str(uuid.UUID(run_input.user_id))
    except ValueError:
        raise InvalidRunInputError(
            f"Invalid input: user_id must be a UUID, got {quoted(run_input.user_id)}"
        ) from None
    check_policy(run_input.policy)
    return replace(run_input, user_id=user_id)


def check_policy(policy: RunPolicy) -> None:
    """Raise :class:`InvalidRunInputError` unless every number is finite and in bounds."""
    bounds = {
        "max_attempts": (1, MAX_ATTEMPTS),
        "timeout_seconds": (0.001, MAX_TIMEOUT_SECONDS),
        "heartbeat_timeout_seconds": (
            MIN_HEARTBEAT_TIMEOUT_SECONDS,
            MAX_HEARTBEAT_TIMEOUT_SECONDS,
        ),
        "retry_initial_interval_seconds": (0.001, MAX_RETRY_INTERVAL_SECONDS),
    }
    for name, (low, high) in bounds.items():
        value = getattr(policy, name)
        if not math.isfinite(value) or not low <= value <= high:
            raise InvalidRunInputError(
                f"Invalid input: policy.{name} must be between {low:g} and {high:g}, "
                f"got {quoted(value)}"
            )
