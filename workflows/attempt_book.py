"""The attempts of one run, as pure code: which dispatch may start its agent and when, and when
the run may go on (another attempt, or its end) because every agent it started has stopped.

A run drives its attempts itself (the activity's own retries are off), so it sees every end.
Every *dispatch* of an attempt (normally one; a second comes when another client resets the
activity, or forges a claim) must claim the attempt before its agent starts, committing to a
stop key (:mod:`agent_runner.lease`). The rules:

- A dispatch starts at once only if no earlier dispatch of the attempt is unaccounted for;
  otherwise it waits one lease (the earlier one's heartbeats stopped being acknowledged by
  now, so it stops within that).
- An attempt's end is the agent's word only if it reveals the stop key of one of its claims:
  a result without it is not a result (another client completed the activity), a failure
  without it is not the agent's failure.
- Every dispatch whose key was not revealed may still work: the run takes no further step
  (no next attempt, no end) until one lease after it learned of the attempt's end.
- A dispatch that timed out on its heartbeat without ever claiming was *lost*: a worker took it
  from the server and went silent before its agent could start (it was paused, cut off or
  killed; a paused worker's open polls take tasks until each has one). No agent started, so the
  run sends the attempt again without using up one of its attempts, up to
  :data:`agent_runner.lease.LOST_DISPATCHES` times.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    TimeoutError,
    TimeoutType,
)

from agent_runner.contract import (
    AgentOutput,
    AttemptClaim,
    AttemptEndKind,
    AttemptGo,
    ErrorType,
    FailureDetails,
)
from agent_runner.lease import reveals

# Agent failures that another attempt cannot help with.
FINAL_ERRORS = {ErrorType.INVALID_INPUT, ErrorType.UNSUPPORTED_AGENT_TYPE}


class AttemptRefusedError(ValueError):
    """A claim for an attempt that is not the run's current one (or is over)."""


@dataclass
class Dispatch:
    attempt: int
    commitment: str
    number: int
    revealed: bool = False


@dataclass
class AttemptBook:
    fence_base: int
    lease_seconds: float
    current: int = 0
    claimable: bool = False
    not_before: datetime | None = None
    dispatches: list[Dispatch] = field(default_factory=list)

    def begin(self, attempt: int) -> None:
        self.current, self.claimable = attempt, True

    def check(self, claim: AttemptClaim) -> None:
        if not self.claimable or claim.attempt != self.current:
            raise AttemptRefusedError(
                f"attempt {claim.attempt} may not start: the run's current attempt is "
                f"{self.current}{'' if self.claimable else ' (over)'}"
            )
        if not isinstance(claim.commitment, str) or len(claim.commitment) != 64:
            raise AttemptRefusedError("a claim commits to a SHA-256 (64 hex digits)")

    def claim(self, claim: AttemptClaim, now: datetime) -> AttemptGo:
        self.check(claim)
        earlier = [d for d in self.dispatches if d.attempt == claim.attempt and not d.revealed]
        wait = self.lease_seconds if earlier else 0.0
        if self.not_before is not None:
            wait = max(wait, (self.not_before - now).total_seconds())
        number = len(self.dispatches) + 1
        self.dispatches.append(Dispatch(claim.attempt, claim.commitment, number))
        return AttemptGo(wait, self.lease_seconds, self.fence_base + number)

    def claimed(self, attempt: int) -> bool:
        return any(d.attempt == attempt for d in self.dispatches)

    def lost(self, attempt: int, end: AttemptEnd) -> bool:
        """Whether ``end`` is that of a dispatch lost before its agent could start: it stopped
        heartbeating without any dispatch of the attempt having claimed it."""
        return end.timeout == TimeoutType.HEARTBEAT and not self.claimed(attempt)

    def check_report(self, attempt: int, stop_key: str) -> None:
        """A report is taken only for the current attempt, from one of its claims."""
        if not self.claimable or attempt != self.current:
            raise AttemptRefusedError(f"attempt {attempt} is not the run's current attempt")
        if not any(
            d.attempt == attempt and reveals(stop_key, d.commitment) for d in self.dispatches
        ):
            raise AttemptRefusedError("the stop key is not one a claim of this attempt made")

    def finish(self, attempt: int, stop_key: str, now: datetime) -> bool:
        """The attempt ended, revealing ``stop_key`` (empty: none). True when it is the word of
        a dispatch of this attempt. Any dispatch left unaccounted for holds the run back one
        lease from ``now``."""
        self.claimable = False
        proven = False
        for dispatch in self.dispatches:
            mine = dispatch.attempt == attempt and not dispatch.revealed
            if mine and reveals(stop_key, dispatch.commitment):
                dispatch.revealed = proven = True
        if any(not d.revealed for d in self.dispatches):
            until = now + timedelta(seconds=self.lease_seconds)
            self.not_before = max(self.not_before or until, until)
            for dispatch in self.dispatches:
                dispatch.revealed = True  # waited out from now on
        return proven

    def wait_seconds(self, now: datetime) -> float:
        if self.not_before is None:
            return 0.0
        return max(0.0, (self.not_before - now).total_seconds())


EndKind = AttemptEndKind


@dataclass(frozen=True)
class AttemptEnd:
    kind: EndKind
    reason: str = ""
    output: AgentOutput | None = None
    stop_key: str = ""
    timeout: TimeoutType | None = None


def attempt_end(outcome: AgentOutput | BaseException | None) -> AttemptEnd:
    """What one attempt's activity came to (None: it never answered before its deadline)."""
    if outcome is None:
        return AttemptEnd(EndKind.FAILED, "the attempt did not end before its deadline")
    if isinstance(outcome, AgentOutput):
        return AttemptEnd(EndKind.DONE, output=outcome, stop_key=outcome.stop_key)
    if not isinstance(outcome, ActivityError):
        return AttemptEnd(EndKind.FAILED, f"{type(outcome).__name__}: {outcome}")
    cause = outcome.cause
    if isinstance(cause, ApplicationError):
        details = FailureDetails.from_details(cause.details)
        key = details.stop_key if details else ""
        if cause.type == ErrorType.CANCELLED:
            return AttemptEnd(EndKind.CANCELLED, cause.message, stop_key=key)
        final = cause.non_retryable and cause.type != ErrorType.LEASE_LOST
        kind = EndKind.FINAL if final or cause.type in FINAL_ERRORS else EndKind.FAILED
        return AttemptEnd(kind, cause.message, stop_key=key)
    if isinstance(cause, CancelledError):
        return AttemptEnd(EndKind.CANCELLED, "cancelled")
    if isinstance(cause, TimeoutError):
        return AttemptEnd(EndKind.FAILED, _timeout_reason(cause.type), timeout=cause.type)
    return AttemptEnd(EndKind.FAILED, str(cause or outcome))


def _timeout_reason(kind: TimeoutType | None) -> str:
    if kind == TimeoutType.SCHEDULE_TO_START:
        return "no worker that has the agent took the attempt in time"
    if kind == TimeoutType.HEARTBEAT:
        return "the attempt stopped answering (heartbeat timeout: its worker may have died)"
    return "the attempt ran past its time limit"
