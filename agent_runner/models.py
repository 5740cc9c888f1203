"""The data that crosses Temporal: workflow and activity inputs and outputs.

Plain dataclasses, one in and one out, so adding a field (with a default) never breaks a
running history. Workflow code imports this module, so it must stay free of side effects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

WORKFLOW_TYPE = "AgentRunWorkflow"
# What a workflow id and an idempotency key may contain; this also keeps them safe to quote in
# a visibility query.
SAFE_KEY_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"
ACTIVITY_NAME = "run_agent"
# Signal a stopped attempt sends to the run now holding its slot: "I am no longer working".
PREDECESSOR_STOPPED_SIGNAL = "predecessor_stopped"
# Signal an attempt sends its own run: it started, it made progress, it failed (AgentEvent).
AGENT_EVENT_SIGNAL = "agent_event"


class ErrorType(StrEnum):
    """``ApplicationError.type`` values the workflow and activity raise."""

    INVALID_INPUT = "InvalidInput"
    UNSUPPORTED_AGENT_TYPE = "UnsupportedAgentType"
    AGENT_FAILED = "AgentFailed"
    # The attempt could not be sure it still held its slot, so it stopped without a result.
    LEASE_LOST = "LeaseLost"
    AGENT_TIMED_OUT = "AgentTimedOut"


@dataclass(frozen=True)
class RunPolicy:
    """How the workflow drives the agent activity.

    Workflow code cannot read settings, so the starter passes these in the input; a start
    from another system that omits them gets these defaults. They are the only place these
    numbers are written: the settings take their defaults from here.
    """

    max_attempts: int = 3
    timeout_seconds: float = 300.0
    heartbeat_timeout_seconds: float = 10.0
    retry_initial_interval_seconds: float = 1.0


@dataclass(frozen=True)
class FailureDetails:
    """What a failed attempt reports beside its message (``ApplicationError.details[0]``), and
    what the workflow's own failure carries to whoever reads the run's status."""

    attempt: int = 0

    @classmethod
    def from_details(cls, details: Sequence[Any]) -> FailureDetails | None:
        """Read them back from decoded failure details; None when they are not ours."""
        first = details[0] if details else None
        if isinstance(first, FailureDetails):
            return first
        if isinstance(first, dict) and isinstance(first.get("attempt"), int):
            return cls(attempt=first["attempt"])
        return None


@dataclass(frozen=True)
class Handoff:
    """What the starter learned of the slot's previous run, read just before starting this one.

    ``not_before``: the previous run closed while an attempt of its agent may still have been
    working (it was terminated, say); this run's agent must not start before that attempt's
    lease has certainly run out, unless the attempt says it stopped (a signal). ``fence_floor``:
    this run's fencing tokens must be above it. A start from another system has no handoff; it
    then waits one lease, since nobody told it who held the slot before.
    """

    previous_run_id: str | None = None
    not_before: datetime | None = None
    fence_floor: int = 0


@dataclass(frozen=True)
class AgentRunInput:
    """Input of the workflow: what to run and for whom."""

    agent_type: str
    user_id: str
    policy: RunPolicy = RunPolicy()
    # The agent's parameters (its params_model), as JSON.
    params: dict[str, Any] | None = None
    handoff: Handoff | None = None
    # Where the run's slot is, as its run id says it (agent_runner.locations): "" for the global
    # scope's slot 0, which is also what a start from another system gets.
    location: str = ""
    # Set when the run waited in a queue: the run id its client knows, and the request's
    # Idempotency-Key (with the request's fingerprint) so a retry finds it.
    queued_id: str | None = None
    queued_at: datetime | None = None
    idempotency_key: str | None = None
    request_fingerprint: str | None = None
    # Runs are waiting for this slot: claim one from the queue before ending (see the queue).
    offered: bool = False


class AgentEventKind(StrEnum):
    ATTEMPT_STARTED = "attempt_started"
    PROGRESS = "progress"
    ATTEMPT_FAILED = "attempt_failed"


@dataclass(frozen=True)
class AgentEvent:
    """What an attempt tells its run as it goes; each is a signal, so the run's history (and
    whoever follows it) sees it at once. Temporal itself records an attempt's start only when
    it ends, and a failed attempt that is retried not at all."""

    kind: AgentEventKind
    attempt: int
    fraction: float | None = None
    message: str | None = None
    # attempt_failed: why, and whether another attempt follows.
    reason: str | None = None
    retrying: bool = False


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended, kept in the memo of a run that handed its slot straight to a queued run
    (continue-as-new): such an execution has no result or failure of its own to read."""

    state: str  # "DONE" or "ERROR"
    result: Any = None
    error: str | None = None
    attempt: int = 0


@dataclass(frozen=True)
class AgentTask:
    """Input of the agent activity."""

    agent_type: str
    user_id: str
    # The run id its client knows (log lines carry it).
    run_id: str | None = None
    params: dict[str, Any] | None = None
    max_attempts: int = RunPolicy.max_attempts
    # Fencing tokens of this run are fence_base + attempt; 0 from a worker of an older version.
    fence_base: int = 0
    # The agent's own time limit per attempt, enforced by the activity itself.
    timeout_seconds: float = RunPolicy.timeout_seconds


@dataclass(frozen=True)
class AgentOutput:
    """Output of the agent activity: the agent's result and the attempt that produced it."""

    result: Any
    attempt: int


@dataclass(frozen=True)
class AgentRunResult:
    """Output of the workflow."""

    agent_type: str
    user_id: str
    result: Any
    attempt: int
