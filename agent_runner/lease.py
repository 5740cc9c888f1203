"""The agent's lease on its slot, in numbers, and the attempt's word that it stopped.

**Lease.** An attempt holds its slot only while the server acknowledges its heartbeats. Each
acknowledged heartbeat, sent at ``s``, lets it work until ``s + lease_seconds(heartbeat
timeout)``; past that it stops before doing more. The heartbeat timeout is the run's policy's,
fixed when the run was granted its slot: nothing the server is told later (another client's
``activity update-options``) lengthens it, and whoever waits for an attempt to stop waits out
this same lease.

**Stop key.** When an attempt starts it draws a random *stop key* and hands its run only the
key's SHA-256 (its *commitment*). When it has certainly stopped (its agent's task has ended) it
reveals the key with its result or failure. Only the attempt knows the key, so no other client
of the namespace can say "this attempt stopped" for it: a forged activity completion carries no
key, and the run then waits out the attempt's lease instead.

Pure functions of their arguments: workflow code uses them too.
"""

from __future__ import annotations

import hashlib
import hmac

# Heartbeat timeouts below this leave no room for a lease (the settings refuse them).
MIN_HEARTBEAT_TIMEOUT_SECONDS = 1.0
# The lease stops this much short of the heartbeat timeout (at most one second, at least a
# quarter of it): room for the clocks of two machines to run at slightly different rates.
MAX_SAFETY_MARGIN_SECONDS = 1.0
# Fencing tokens of one run are base + its dispatch number; the next run's base on a slot is at
# least one stride on.
FENCE_STRIDE = 1000


def lease_seconds(heartbeat_timeout_seconds: float) -> float:
    """How long one acknowledged heartbeat lets an attempt work."""
    margin = min(MAX_SAFETY_MARGIN_SECONDS, heartbeat_timeout_seconds / 4)
    return heartbeat_timeout_seconds - margin


def renew_seconds(heartbeat_timeout_seconds: float) -> float:
    """How often a working attempt confirms its lease: twice per lease, on a fixed beat, so
    each confirmation may answer up to half a lease late without the lease running out."""
    return lease_seconds(heartbeat_timeout_seconds) / 2


def fence_base(start_time_microseconds: int, floor: int) -> int:
    """The fencing token base of a run its slot's coordinator started at that server time:
    above every token of the runs before it on the slot (``floor``), and growing with the
    server's clock when that is all there is to go by."""
    return max(floor, start_time_microseconds * FENCE_STRIDE)


def commitment(stop_key: str) -> str:
    """What an attempt tells its run when it starts: the SHA-256 of its stop key (hex)."""
    return hashlib.sha256(bytes.fromhex(stop_key)).hexdigest()


def reveals(stop_key: object, committed: str) -> bool:
    """Whether ``stop_key`` (as the attempt reported it) is the key behind ``committed``."""
    if not isinstance(stop_key, str) or len(stop_key) != 64:
        return False
    try:
        return hmac.compare_digest(commitment(stop_key), committed)
    except ValueError:
        return False


def retry_interval_seconds(initial: float, attempt: int) -> float:
    """The pause before attempt ``attempt + 1`` after attempt ``attempt`` failed: doubling from
    ``initial``, at most a hundred times it (Temporal's own retry policy's defaults)."""
    return float(min(initial * 2.0 ** (attempt - 1), 100 * initial))


# How many lost dispatches (sent to a worker that went silent before its agent could start) a
# run sends again without using up an attempt, over all its attempts: more than the open polls
# one silent worker holds (the SDK's max_concurrent_activity_task_polls, 5 by default).
LOST_DISPATCHES = 10


def attempt_deadline_seconds(
    timeout_seconds: float, heartbeat_timeout_seconds: float, worker_wait_seconds: float
) -> float:
    """How long a run waits for one attempt's answer before it gives up on it: a worker's
    pickup, the agent's own limit, then one heartbeat timeout (the server's backstop)."""
    return worker_wait_seconds + timeout_seconds + heartbeat_timeout_seconds + 5.0


def run_bound_seconds(
    *,
    max_attempts: int,
    timeout_seconds: float,
    heartbeat_timeout_seconds: float,
    retry_initial_interval_seconds: float,
    worker_wait_seconds: float,
) -> float:
    """The longest a run can hold its slot, whatever happens to its attempts: each attempt's
    deadline, the grace for a cancelled one to answer, the wait for one that did not say it
    stopped, the pauses between them, and the dispatches lost before an agent started. The
    coordinator starts the run's workflow with this as its execution timeout, the server's
    backstop for a workflow that cannot even run."""
    lease = lease_seconds(heartbeat_timeout_seconds)
    per_attempt = (
        attempt_deadline_seconds(timeout_seconds, heartbeat_timeout_seconds, worker_wait_seconds)
        + (lease + heartbeat_timeout_seconds)
        + lease
    )
    pauses = sum(
        retry_interval_seconds(retry_initial_interval_seconds, attempt)
        for attempt in range(1, max_attempts)
    )
    # A lost dispatch: a worker's pickup, then its heartbeat timeout.
    lost = LOST_DISPATCHES * (worker_wait_seconds + heartbeat_timeout_seconds + 5.0)
    return max_attempts * per_attempt + pauses + lost + 60.0
