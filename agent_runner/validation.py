"""Validation of what other clients send our workflows, wherever a start came from.

The REST API validates its request body itself; this guards the coordinator and the run
workflow against starts and messages from other systems (another SDK, the ``temporal`` CLI),
so bad input is refused with a reason instead of failing a workflow task forever. Every number
that reaches Temporal is bounded here: a timeout of 1e308 s or 2^40 attempts cannot even be
scheduled.
"""

from __future__ import annotations

import functools
import math
import re
import uuid
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from pydantic import TypeAdapter, ValidationError

from agent_runner.contract import (
    FAIRNESS_KEY_PATTERN,
    MAX_FAIRNESS_KEY,
    MAX_WEIGHT,
    MAX_WEIGHTS,
    PRIORITY_FIRST,
    PRIORITY_LAST,
    AdmitRequest,
    ErrorType,
    RunPolicy,
    RunRequest,
    ScopeLimits,
)
from agent_runner.ids import AGENT_TYPE_PATTERN, MAX_QUEUE, MAX_SLOTS
from agent_runner.lease import MIN_HEARTBEAT_TIMEOUT_SECONDS

# Bounds of a run policy; the settings use the same ones.
MAX_ATTEMPTS = 100
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600.0
MAX_HEARTBEAT_TIMEOUT_SECONDS = 3600.0
MAX_RETRY_INTERVAL_SECONDS = 3600.0
# Reasons quote at most this much of a bad value.
MAX_QUOTED = 64


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


@functools.cache
def _adapter(kind: Any) -> TypeAdapter[Any]:
    """Built once per type (a build costs milliseconds; a coordinator decodes on every step)."""
    return TypeAdapter(kind)


def parse_as(kind: Any, raw: object, what: str) -> Any:
    """Decoded JSON as ``kind`` (a dataclass, say), or :class:`InvalidRunInputError` saying
    which fields are wrong."""
    try:
        value = _adapter(kind).validate_python(raw, strict=False)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or what}: {error['msg']}"
            for error in err.errors(include_input=False)[:5]
        )
        raise InvalidRunInputError(f"Invalid {what}: {problems}") from None
    return value


def checked_request(request: RunRequest, default_policy: RunPolicy) -> RunRequest:
    """The request with its policy filled in, or :class:`InvalidRunInputError` with a reason:
    the agent type's shape (whether such an agent exists is for the API and the workers to
    say), the user id (a UUID, made canonical) and every number of the policy."""
    if not isinstance(request.agent_type, str) or not re.fullmatch(
        AGENT_TYPE_PATTERN, request.agent_type
    ):
        raise UnsupportedAgentTypeError(
            f"Unsupported agent_type: {quoted(request.agent_type)}; an agent type is "
            "lowercase letters, digits and dashes"
        )
    try:
        user_id = str(uuid.UUID(str(request.user_id)))
    except ValueError:
        raise InvalidRunInputError(
            f"Invalid input: user_id must be a UUID, got {quoted(request.user_id)}"
        ) from None
    if request.params is not None and not isinstance(request.params, dict):
        raise InvalidRunInputError("Invalid input: params must be an object")
    policy = request.policy or default_policy
    check_policy(policy)
    return replace(request, user_id=user_id, policy=policy)


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
    if policy.queue_timeout_seconds is not None:
        bounds["queue_timeout_seconds"] = (0.001, MAX_TIMEOUT_SECONDS)
    for name, (low, high) in bounds.items():
        value = getattr(policy, name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidRunInputError(f"Invalid input: policy.{name} must be a number")
        if not math.isfinite(value) or not low <= value <= high:
            raise InvalidRunInputError(
                f"Invalid input: policy.{name} must be between {low:g} and {high:g}, "
                f"got {quoted(value)}"
            )


def check_limits(limits: ScopeLimits) -> None:
    """Raise :class:`InvalidRunInputError` unless every limit is in bounds."""
    if not isinstance(limits.slots, int) or not 1 <= limits.slots <= MAX_SLOTS:
        raise InvalidRunInputError(f"slots must be between 1 and {MAX_SLOTS}")
    if not isinstance(limits.queue_max, int) or not 1 <= limits.queue_max <= MAX_QUEUE:
        raise InvalidRunInputError(f"queue_max must be between 1 and {MAX_QUEUE}")
    aging = limits.aging_seconds
    if isinstance(aging, bool) or not isinstance(aging, int | float):
        raise InvalidRunInputError("aging_seconds must be a number")
    if not 0 <= aging <= MAX_TIMEOUT_SECONDS:
        raise InvalidRunInputError(f"aging_seconds must be between 0 and {MAX_TIMEOUT_SECONDS:g}")
    if not isinstance(limits.paused, bool):
        raise InvalidRunInputError("paused must be true or false")
    if not isinstance(limits.fair_shares, bool):
        raise InvalidRunInputError("fair_shares must be true or false")
    if len(limits.weights) > MAX_WEIGHTS:
        raise InvalidRunInputError(f"at most {MAX_WEIGHTS} weights")
    for key, weight in limits.weights.items():
        if not isinstance(key, str) or not 0 < len(key) <= MAX_FAIRNESS_KEY:
            raise InvalidRunInputError(f"a weight's key is 1 to {MAX_FAIRNESS_KEY} characters")
        if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= MAX_WEIGHT:
            raise InvalidRunInputError(f"a weight is an integer from 1 to {MAX_WEIGHT}")


def check_admission(request: AdmitRequest) -> None:
    """What an admit adds to its run, checked (another client's admit may hold anything)."""
    priority = request.priority
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidRunInputError("Invalid input: priority must be an integer from 1 to 5")
    if not PRIORITY_FIRST <= priority <= PRIORITY_LAST:
        raise InvalidRunInputError(
            f"Invalid input: priority must be from {PRIORITY_FIRST} to {PRIORITY_LAST}, "
            f"got {priority}"
        )
    key = request.fairness_key
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= MAX_FAIRNESS_KEY):
        raise InvalidRunInputError(
            f"Invalid input: fairness_key must be 1 to {MAX_FAIRNESS_KEY} characters"
        )
    if key is not None and not re.fullmatch(FAIRNESS_KEY_PATTERN, key):
        # Another client's admit put Markdown and HTML in the Web UI's current details (found
        # by a hostile trial); the API refuses such a key already.
        raise InvalidRunInputError(
            "Invalid input: fairness_key must be letters, digits and . _ : - only"
        )
