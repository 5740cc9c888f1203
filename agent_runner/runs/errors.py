"""The errors of the runs package, and the one place Temporal's errors are mapped to them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from temporalio.service import RPCError, RPCStatusCode

UNAVAILABLE = {RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED}
NOT_FOUND = {RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT}


class AgentBusyError(Exception):
    """Another run holds the singleton; ``running_run_id`` is that run."""

    def __init__(self, running_run_id: str | None) -> None:
        super().__init__("An agent is already running, please retry later")
        self.running_run_id = running_run_id


class QueueFullError(Exception):
    """The scope's queue holds as many runs as it may (AGENT_QUEUE_MAX)."""

    def __init__(self) -> None:
        super().__init__("The queue is full, please retry later")


class IdempotencyKeyReusedError(ValueError):
    """The idempotency key was used before with a different request."""


class RunNotFoundError(LookupError):
    """No run of this workflow id has that run id."""


class RunFinishedError(Exception):
    """The run has already ended, so it cannot be cancelled."""


class InvalidPageTokenError(ValueError):
    """The page token is not one this service handed out."""


class TemporalUnavailableError(Exception):
    """The Temporal server could not be reached in time."""


@contextmanager
def temporal_call() -> Iterator[None]:
    """Turn "server unreachable" into one typed error. Nothing else is: any other failure is a
    bug or a refusal to report, not an outage to hide behind a 503."""
    try:
        yield
    except RPCError as err:
        if err.status in UNAVAILABLE:
            raise TemporalUnavailableError(err.message) from err
        raise
