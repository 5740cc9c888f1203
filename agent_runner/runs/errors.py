"""The errors of the runs package, and the one place Temporal's errors are mapped to them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime

from temporalio.client import (
    WorkflowExecutionAsyncIterator,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from agent_runner.contract import ADMIT_EXPIRED

# The server did not answer: it refused the connection (UNAVAILABLE), let the call's deadline
# pass (DEADLINE_EXCEEDED), or hung until the client's own RPC timeout cut the call short
# (CANCELLED, "Timeout expired": a paused or wedged server). A cancellation of our own task is
# asyncio.CancelledError, never an RPCError, so it is not among them.
# RESOURCE_EXHAUSTED: the server is too busy for the call now; that is waiting, not an error.
UNAVAILABLE = {
    RPCStatusCode.UNAVAILABLE,
    RPCStatusCode.DEADLINE_EXCEEDED,
    RPCStatusCode.CANCELLED,
    RPCStatusCode.RESOURCE_EXHAUSTED,
}
NOT_FOUND = {RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT}


class AgentBusyError(Exception):
    """Every slot of the scope is taken, or runs wait in its queue: ``running_run_id`` is the
    run that has held a slot longest, granted at ``running_since``."""

    def __init__(
        self,
        running_run_id: str | None,
        running_since: datetime | None = None,
        *,
        paused: bool = False,
    ) -> None:
        super().__init__("An agent is already running, please retry later")
        self.running_run_id = running_run_id
        self.running_since = running_since
        # The scope is paused (it starts nothing until resumed).
        self.paused = paused


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


BAD_PAGE_TOKEN_DETAIL = "page_token is not a token this service returned"  # noqa: S105


class InvalidPageTokenError(ValueError):
    """The page token is not one this service handed out."""


async def fetch_page(executions: WorkflowExecutionAsyncIterator, token: bytes | None) -> None:
    """Fetch one page of a visibility listing; a signed token whose inside the server cannot
    read is :class:`InvalidPageTokenError`, an outage is the outage."""
    try:
        await executions.fetch_next_page()
    except RPCError as err:
        if is_unavailable(err):  # a broken connection is UNKNOWN too: an outage, not a token
            raise
        if token and err.status in (RPCStatusCode.INVALID_ARGUMENT, RPCStatusCode.UNKNOWN):
            raise InvalidPageTokenError(BAD_PAGE_TOKEN_DETAIL) from None
        raise


class TemporalUnavailableError(Exception):
    """The Temporal server could not be reached in time."""


class NoWorkerError(TemporalUnavailableError):
    """Nothing answered because no worker polls the deployment's task queue: the scopes'
    coordinators (workflows) run on the workers."""


def is_unavailable(err: BaseException) -> bool:
    """Whether ``err`` says the Temporal server could not be reached in time.

    An update's wait ends in :class:`WorkflowUpdateRPCTimeoutOrCancelledError` both when its
    RPC timed out (an outage) and when our own task was cancelled (not one): only the first, an
    :class:`RPCError` as its cause, counts."""
    if isinstance(err, WorkflowUpdateRPCTimeoutOrCancelledError):
        cause = err.__cause__
        return isinstance(cause, RPCError) and _unavailable(cause)
    return isinstance(err, RPCError) and _unavailable(err)


# What the client says (status UNKNOWN) when the connection broke under a call, the server
# killed or restarted while it waited (found by the randomized run as a 500).
_TRANSPORT = "transport error"

# FAILED_PRECONDITION with these words: the workflow cannot answer now because its workflow task
# is failing (a worker cannot run it), or, for a query, because no worker polled its task queue
# lately (just after a server restart, before the workers' polls are back: found by the
# randomized run as a 500), or because its newest execution was closed from outside before it
# ran a single task (a coordinator terminated just after it continued as new: a query has no
# state to answer from until the next start's coordinator takes its queue over; chaos seed
# 93151, a 500). Nothing the client sent is wrong: 503, not 500.
_TASK_FAILING = (
    "Workflow Task in failed state",
    "workflow task failure",
    "no poller seen for task queue recently",
    "Workflow execution closed before WorkflowTaskStarted event",
)


def _unavailable(err: RPCError) -> bool:
    if err.status in UNAVAILABLE:
        return True
    if err.message == _TRANSPORT:
        return True
    if err.status != RPCStatusCode.FAILED_PRECONDITION:
        return False
    # An update-with-start names the failing operation only in its status's details.
    told = err.message.encode() + (err.raw_grpc_status or b"")
    return any(words.encode() in told for words in _TASK_FAILING)


# The server's failures of an update that was never applied (the handler's effects are
# committed, with its result, only in the task it returns in): its workflow closed before the
# handler returned (terminated from outside, say), or a worker completed the workflow task that
# carried it without processing it (the SDK did so once just after a server restart; the server
# then rejects the update). Both were found by the randomized run as 500s.
_NOT_APPLIED = frozenset({"AcceptedUpdateCompletedWorkflow", "UnprocessedUpdate"})


def not_applied(err: BaseException) -> bool:
    """Whether ``err`` says the update was never applied, so sending it again is safe."""
    cause = err.cause if isinstance(err, WorkflowUpdateFailedError) else None
    return isinstance(cause, ApplicationError) and cause.type in _NOT_APPLIED


def refused_late(err: WorkflowUpdateFailedError) -> bool:
    """Whether a coordinator refused an admit come past its ``not_after`` (its validator: it
    took nothing in)."""
    cause = err.cause
    return isinstance(cause, ApplicationError) and cause.type == ADMIT_EXPIRED


@asynccontextmanager
async def update_wait(seconds: float | None) -> AsyncIterator[None]:
    """Bound the wait for an update's answer by the loop's clock, as its RPC timeout does not:
    the SDK waits for an accepted update's outcome with polls the server answers just before
    each one's deadline, and polls again, so an update accepted but not answered (its handler
    awaits a read, and the worker running it died, or no worker runs it) was waited on with no
    end. Past ``seconds`` the wait ends as an RPC timeout does,
    :class:`WorkflowUpdateRPCTimeoutOrCancelledError` from DEADLINE_EXCEEDED (see
    :func:`is_unavailable`): the update may still be applied. None: no bound. A cancel of the
    caller's own task is left as it is."""
    bound = asyncio.timeout(seconds)
    try:
        async with bound:
            yield
    except (WorkflowUpdateRPCTimeoutOrCancelledError, TimeoutError):
        if not bound.expired() or cancelling():
            raise
        raise WorkflowUpdateRPCTimeoutOrCancelledError() from RPCError(
            f"no answer within {seconds:.2f} s", RPCStatusCode.DEADLINE_EXCEEDED, b""
        )


def cancelling() -> bool:
    """Whether the running task is being cancelled (the SDK turns a cancel into an error of
    its own)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


@contextmanager
def temporal_call() -> Iterator[None]:
    """Turn "server unreachable" into one typed error. Nothing else is: any other failure is a
    bug or a refusal to report, not an outage to hide behind a 503."""
    try:
        yield
    except (RPCError, WorkflowUpdateRPCTimeoutOrCancelledError) as err:
        if is_unavailable(err):
            message = err.message if isinstance(err, RPCError) else str(err)
            raise TemporalUnavailableError(message) from err
        raise
    except WorkflowUpdateFailedError as err:
        if not_applied(err):
            raise TemporalUnavailableError(
                "the scope's coordinator could not answer this time; ask again"
            ) from err
        raise
