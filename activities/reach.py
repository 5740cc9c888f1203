"""Reaching an attempt's own run through the server: an update sent again (with its same id,
so it is applied once) while the server cannot be reached, and, when an answer was lost, a look
at the run's history for whether the update was taken after all."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio.client import (
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.service import RPCError, RPCStatusCode

# How long a dispatch keeps trying to reach its run (to claim, or to report) before giving up.
REACH_FOR = timedelta(minutes=2)
T = TypeVar("T")


class RefusedError(Exception):
    """The run said no, or is gone. ``after_doubt``: an earlier try's answer never came (it
    may have been taken)."""

    def __init__(self, reason: str, *, after_doubt: bool = False) -> None:
        super().__init__(reason)
        self.after_doubt = after_doubt


async def reach(call: Callable[[], Awaitable[T]], within: timedelta = REACH_FOR) -> T:
    """``call()`` (an update to the attempt's own run), made again while the server cannot be
    reached, for up to ``within``; :class:`RefusedError` when the run refuses it or no longer
    runs."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within.total_seconds()
    pause, doubt = 0.1, False
    while True:
        try:
            return await call()
        except WorkflowUpdateFailedError as err:
            raise RefusedError(str(err.cause or err), after_doubt=doubt) from None
        except WorkflowUpdateRPCTimeoutOrCancelledError:
            reason = "its run could not be reached in time"
        except RPCError as err:
            if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
                raise RefusedError(
                    f"its run has ended ({err.message})", after_doubt=doubt
                ) from None
            reason = f"its run could not be reached: {err.message}"
        doubt = True
        if loop.time() > deadline:
            raise RefusedError(reason, after_doubt=doubt)
        await asyncio.sleep(pause)
        pause = min(pause * 2, 2.0)


async def accepted(run: WorkflowHandle[Any, Any], update_id: str) -> bool:
    """Whether the run's history holds the acceptance of the update ``update_id`` (a try whose
    answer was lost may have been taken before the run closed). Read until the server
    answers, for up to :data:`REACH_FOR`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + REACH_FOR.total_seconds()
    while True:
        try:
            async for event in run.fetch_history_events():
                taken = event.workflow_execution_update_accepted_event_attributes
                if taken.accepted_request.meta.update_id == update_id:
                    return True
            return False
        except RPCError:
            if loop.time() > deadline:
                return False
        await asyncio.sleep(1.0)
