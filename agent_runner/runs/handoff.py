"""What a starter passes to the next run on a slot: read the slot's latest run (one
``describe``, strongly consistent) just before starting, and work out how long the new run's
agent must wait for an attempt that may outlive its run (see :mod:`agent_runner.lease`)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import WorkflowExecutionDescription

from agent_runner.lease import FENCE_STRIDE, successor_not_before
from agent_runner.models import Handoff, RunPolicy

# Attempt states in which an attempt may be working: its worker holds the task.
MAY_BE_WORKING = {
    PendingActivityState.PENDING_ACTIVITY_STATE_STARTED,
    PendingActivityState.PENDING_ACTIVITY_STATE_CANCEL_REQUESTED,
}
_DEFAULT_HEARTBEAT_TIMEOUT = RunPolicy.heartbeat_timeout_seconds


def handoff_after(
    previous: WorkflowExecutionDescription | None, memo: Mapping[str, Any]
) -> Handoff:
    """The handoff from the slot's latest run, closed (or None when the slot was never used).

    Two bounds, the later of which counts: an attempt of ``previous`` still out when it closed
    (it was terminated mid-run, say) may work until its lease runs out; and ``previous`` may
    itself have been waiting for an attempt before it when it closed (``not_before`` in its
    memo, an ISO time or "" for none: Temporal drops a memo key whose value is null; a run whose
    memo lacks it was started elsewhere and had to wait one lease from its start).
    """
    if previous is None:
        return Handoff()
    bounds: list[datetime] = []
    if "not_before" in memo:
        if memo["not_before"]:
            bounds.append(datetime.fromisoformat(memo["not_before"]))
    elif previous.start_time is not None:
        bounds.append(previous.start_time + timedelta(seconds=_DEFAULT_HEARTBEAT_TIMEOUT))
    for pending in previous.raw_description.pending_activities:
        if pending.state not in MAY_BE_WORKING:
            continue
        heard = pending.last_heartbeat_time if pending.HasField("last_heartbeat_time") else None
        heard = heard or pending.last_started_time
        options = pending.activity_options
        heartbeat_timeout = (
            options.heartbeat_timeout.ToTimedelta().total_seconds()
            if options.HasField("heartbeat_timeout")
            else _DEFAULT_HEARTBEAT_TIMEOUT
        )
        bounds.append(successor_not_before(heard.ToDatetime(tzinfo=UTC), heartbeat_timeout))
    fence_base = memo.get("fence_base")
    return Handoff(
        previous_run_id=previous.run_id,
        not_before=max(bounds) if bounds else None,
        fence_floor=fence_base + FENCE_STRIDE if isinstance(fence_base, int) else 0,
    )
