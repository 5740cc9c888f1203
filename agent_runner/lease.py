"""The agent's lease on its slot, in numbers: how long an attempt may work on one confirmed
heartbeat, how often it renews, when a successor may start, and its fencing token.

An attempt holds its slot only while its heartbeats are acknowledged. Each acknowledged
heartbeat, sent at ``s``, lets it work until ``s + lease_seconds(heartbeat_timeout)``; past that
it stops before doing more. The server gives up on a silent attempt one heartbeat timeout after
the last heartbeat it *received* (at or after ``s``), so a retry never starts while a paused
attempt may still believe it holds the slot. A run that closed with an attempt still out
(terminated, timed out) leaves the same bound to whoever takes the slot next:
:func:`successor_not_before`.

Pure functions of their arguments: workflow code uses them too.
"""

from __future__ import annotations

from datetime import datetime, timedelta

# Heartbeat timeouts below this leave no room for a lease (the settings refuse them).
MIN_HEARTBEAT_TIMEOUT_SECONDS = 1.0
# The lease stops this much short of the heartbeat timeout (at most one second, at least a
# quarter of it): room for the clocks of two machines to run at slightly different rates and for
# a heartbeat's trip to the server.
MAX_SAFETY_MARGIN_SECONDS = 1.0
# Renew at least this often, whatever the heartbeat timeout: a cancel reaches the agent on the
# next renewal, and a terminated run's agent stops on it.
MAX_RENEW_SECONDS = 0.5
# Fencing tokens of one run are base + attempt; the next run's base is at least one stride on.
FENCE_STRIDE = 1000


def lease_seconds(heartbeat_timeout_seconds: float) -> float:
    """How long one acknowledged heartbeat lets an attempt work."""
    margin = min(MAX_SAFETY_MARGIN_SECONDS, heartbeat_timeout_seconds / 4)
    return heartbeat_timeout_seconds - margin


def renew_seconds(heartbeat_timeout_seconds: float) -> float:
    """How often a working attempt confirms its lease: several times per lease, and at least
    every :data:`MAX_RENEW_SECONDS`."""
    return min(MAX_RENEW_SECONDS, lease_seconds(heartbeat_timeout_seconds) / 4)


def successor_not_before(last_seen_alive: datetime, heartbeat_timeout_seconds: float) -> datetime:
    """The earliest moment (server time) the next agent may start on a slot whose previous
    attempt was last heard of at ``last_seen_alive`` and was never heard to stop."""
    return last_seen_alive + timedelta(seconds=heartbeat_timeout_seconds)


def fence_base(start_time: datetime, floor: int) -> int:
    """The fencing token base of a run started at ``start_time`` (server time): above every
    token of the runs before it on the same workflow id (``floor``), and growing with the
    server's clock when that is all there is to go by."""
    return max(floor, int(start_time.timestamp() * 1_000_000) * FENCE_STRIDE)


def fencing_token(base: int, attempt: int) -> int:
    """The token attempt ``attempt`` of a run passes to the external resource."""
    return base + attempt
