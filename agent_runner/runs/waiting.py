"""Waiting for a run to change or to end, without polling in a tight loop."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from agent_runner.locations import SlotRun
from agent_runner.runs.errors import temporal_call
from agent_runner.runs.slot_status import close_event, closed_run_status
from agent_runner.runs.status import get_run_status, locate
from agent_runner.runs.types import RunStatus, RunTarget


async def wait_for_change(
    client: Client,
    run_id: str,
    *,
    wait: timedelta,
    target: RunTarget,
    poll_interval: timedelta = timedelta(milliseconds=250),
) -> RunStatus:
    """The run's status as soon as its state (or queue position) changes or it finishes, at the
    latest after ``wait``.

    A run holding a slot finishes by Temporal's own long poll on its close event, so a waiting
    caller learns of it at once; other changes are noticed within ``poll_interval``. Should the
    long poll fail (the server restarting, say), it is tried again a poll interval later, never
    in a tight loop.
    """
    first = await get_run_status(client, run_id, target=target)
    if first.is_final:
        return first
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait.total_seconds()
    pause = poll_interval.total_seconds()
    closed = _close_poll(client, target, first, wait)
    try:
        current = first
        while (remaining := deadline - loop.time()) > 0 and _same(current, first):
            await asyncio.wait({closed}, timeout=min(remaining, pause))
            if closed.done():
                if closed.exception() is None and closed.result() is not None:
                    return closed.result()  # type: ignore[return-value]
                await asyncio.sleep(min(pause, max(0.0, deadline - loop.time())))
                closed = _close_poll(client, target, first, timedelta(seconds=remaining))
            current = await get_run_status(client, run_id, target=target)
        return current
    finally:
        closed.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await closed


async def wait_for_end(
    client: Client, run_id: str, *, wait: timedelta, target: RunTarget
) -> RunStatus:
    """The run's final status as soon as it closes; its current status after ``wait``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait.total_seconds()
    current = await get_run_status(client, run_id, target=target)
    while not current.is_final and (remaining := deadline - loop.time()) > 0:
        current = await wait_for_change(
            client, run_id, wait=timedelta(seconds=remaining), target=target
        )
    return current


def _same(current: RunStatus, first: RunStatus) -> bool:
    return (current.state, current.queue_position) == (first.state, first.queue_position)


def _close_poll(
    client: Client, target: RunTarget, first: RunStatus, wait: timedelta
) -> asyncio.Future[RunStatus | None]:
    """Long-poll the close event of the slot execution holding the run (None: nothing to poll,
    the run is queued)."""

    async def poll() -> RunStatus | None:
        if first.workflow_id is None or first.temporal_run_id is None:
            await asyncio.sleep(wait.total_seconds())
            return None
        if not isinstance(locate(target, first.run_id), SlotRun) and first.queue_position:
            await asyncio.sleep(wait.total_seconds())
            return None
        handle = client.get_workflow_handle(first.workflow_id, run_id=first.temporal_run_id)
        try:
            event = await close_event(handle, wait=True, target=target, rpc_timeout=wait)
        except RPCError as err:
            if err.status == RPCStatusCode.DEADLINE_EXCEEDED:
                return None
            raise
        if event.HasField("workflow_execution_continued_as_new_event_attributes"):
            return None  # handed its slot over: its status comes from its memo
        with temporal_call():
            return await closed_run_status(client, first, event)

    return asyncio.ensure_future(poll())
