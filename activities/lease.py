"""The attempt's hold on its slot, kept alive by heartbeats the server acknowledges.

The SDK's own heartbeats are fire-and-forget: an attempt learns nothing from them about whether
the server still counts it as the one working. This keeper sends the attempt's heartbeats itself
and waits for each answer. An answer means the attempt is still current: the lease runs for
:func:`agent_runner.lease.lease_seconds` of the run's policy from when that heartbeat was
*sent*. ``NotFound`` means the run was closed (terminated, say), the attempt was completed or
failed by someone else, or given up on: the lease is lost at once. A call that does not answer
in time confirms nothing. No answer for a whole lease (a paused process, a partition) and the
lease runs out by itself. Either way the agent is cancelled, and :meth:`Lease.check` refuses
more work.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from temporalio import activity
from temporalio.api.common.v1 import Payloads
from temporalio.api.workflowservice.v1 import RecordActivityTaskHeartbeatRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from agent_runner.agents import LeaseLostError
from agent_runner.lease import lease_seconds, renew_seconds


class Lease:
    """One attempt's lease. :meth:`confirm` before starting work, :meth:`keep` beside it."""

    def __init__(self, client: Client, heartbeat_timeout_seconds: float) -> None:
        self._client = client
        self._task_token = activity.info().task_token
        self.duration = lease_seconds(heartbeat_timeout_seconds)
        self.renew_every = renew_seconds(heartbeat_timeout_seconds)
        self._valid_until = 0.0  # time.monotonic(); 0: never confirmed
        self._expires_at_wall: datetime | None = None
        self.lost_reason: str | None = None
        # Another client asked the attempt to stop: a cancel, a pause or a reset.
        self.stop_reason: str | None = None
        # What each heartbeat carries (the latest progress): the Web UI shows it on the attempt.
        self.details: object = None

    @property
    def expires_at(self) -> datetime | None:
        """When (wall clock, UTC) the lease runs out without a further acknowledged heartbeat."""
        return self._expires_at_wall

    def check(self) -> None:
        """Raise :class:`LeaseLostError` unless the lease is certainly still held."""
        if self.lost_reason is None and time.monotonic() >= self._valid_until:
            self.lost_reason = (
                f"no heartbeat acknowledged for {self.duration:g} s (a paused process, or the "
                "server out of reach)"
            )
        if self.lost_reason is not None:
            raise LeaseLostError(self.lost_reason)

    async def confirm(self) -> None:
        """Send one heartbeat and wait for the answer; extend the lease, or lose it."""
        await self._send(timedelta(seconds=self.renew_every))
        self.check()

    async def _send(self, timeout: timedelta) -> None:
        """One heartbeat, answered within ``timeout`` or not at all: an answer extends the lease
        from when it was sent; NOT_FOUND loses it; anything else confirms nothing."""
        details = None
        if self.details is not None:
            details = Payloads(payloads=await self._client.data_converter.encode([self.details]))
        sent = time.monotonic()
        sent_wall = datetime.now(UTC)
        try:
            response = await self._client.workflow_service.record_activity_task_heartbeat(
                RecordActivityTaskHeartbeatRequest(
                    task_token=self._task_token,
                    namespace=self._client.namespace,
                    identity=self._client.identity,
                    details=details,
                ),
                retry=False,
                timeout=timeout,
            )
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                self.lost_reason = f"the server no longer knows this attempt: {err.message}"
            return
        if sent + self.duration > self._valid_until:
            self._valid_until = sent + self.duration
            self._expires_at_wall = sent_wall + timedelta(seconds=self.duration)
        if response.cancel_requested:
            self.stop_reason = self.stop_reason or "cancelled"
        if response.activity_paused:
            self.stop_reason = self.stop_reason or "paused from outside (temporal activity pause)"
        if response.activity_reset:
            self.stop_reason = self.stop_reason or "reset from outside (temporal activity reset)"

    async def keep(self, on_lost: Callable[[], object], on_stop: Callable[[], object]) -> None:
        """Renew until cancelled; call ``on_lost`` once the lease is gone, ``on_stop`` whenever
        an answer says the server asks the attempt to stop.

        A heartbeat goes out every ``renew_every`` on a fixed beat, whether the one before has
        answered or not, and each is waited for as long as its answer can still extend the lease
        (a whole lease from its send). So a slow server costs no more calls, and the lease holds
        while each answer takes less than half a lease; when the next heartbeat waited for the
        one before, two slow answers in a row lost it (a busy server turned into failed runs)."""
        answered = asyncio.Event()
        sends: set[asyncio.Task[None]] = set()

        def sent(task: asyncio.Task[None]) -> None:
            sends.discard(task)
            answered.set()

        next_send = time.monotonic() + self.renew_every
        try:
            while True:
                now = time.monotonic()
                if self.lost_reason is not None or now >= self._valid_until:
                    with contextlib.suppress(LeaseLostError):
                        self.check()
                    on_lost()
                    return
                if answered.is_set():
                    answered.clear()
                    if self.stop_reason is not None:
                        on_stop()
                if now >= next_send:
                    next_send = now + self.renew_every
                    # The SDK's own heartbeat too: its core cancels an attempt that does not
                    # heartbeat through it within the heartbeat timeout (it sends at most one
                    # per 0.8 of it).
                    activity.heartbeat(*(() if self.details is None else (self.details,)))
                    task = asyncio.ensure_future(self._send(timedelta(seconds=self.duration)))
                    sends.add(task)
                    task.add_done_callback(sent)
                wake = min(next_send, self._valid_until) - time.monotonic()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, wake)):
                        await answered.wait()
        finally:
            for task in sends:
                task.cancel()
