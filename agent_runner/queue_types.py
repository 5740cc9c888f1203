"""The data that crosses Temporal between API, queue workflow and slot workflows.

Plain dataclasses, as in :mod:`agent_runner.models`: adding a field with a default never breaks
a running history. Workflow code imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agent_runner.locations import Scope
from agent_runner.models import AgentRunInput, RunPolicy

QUEUE_WORKFLOW_TYPE = "AgentQueueWorkflow"
ENQUEUE_UPDATE = "enqueue"
CLAIM_UPDATE = "claim"
CANCEL_UPDATE = "cancel_queued"
OFFER_SIGNAL = "offer"


@dataclass(frozen=True)
class QueueConfig:
    """What the queue needs to know of the deployment; the workers' settings give it."""

    slots: int = 1
    queue_max: int = 1000
    task_queue: str = "agent-runner"
    default_policy: RunPolicy = RunPolicy()


@dataclass(frozen=True)
class EnqueueRequest:
    """One run to enqueue. ``request_id`` makes a repeated call return the first answer."""

    request_id: str
    agent_type: str
    user_id: str
    policy: RunPolicy | None = None
    idempotency_key: str | None = None
    request_fingerprint: str | None = None
    # The agent's parameters (its params_model), as JSON.
    params: dict[str, Any] | None = None


@dataclass(frozen=True)
class EnqueueResult:
    """Accepted (``run_id``; ``queue_position`` None when it started at once) or refused."""

    request_id: str
    run_id: str | None = None
    queue_position: int | None = None
    refused: str | None = None  # "full", or why the request is invalid
    workflow_id: str | None = None
    temporal_run_id: str | None = None


@dataclass(frozen=True)
class QueueEntry:
    """A run waiting in the queue."""

    run_id: str
    request_id: str
    run_input: AgentRunInput
    enqueued_at: datetime


@dataclass(frozen=True)
class Claim:
    """A slot's run, ending, asks for the next queued run."""

    slot: int
    claimant_run_id: str


@dataclass(frozen=True)
class ClaimResult:
    entry: QueueEntry | None = None
    more: bool = False


@dataclass(frozen=True)
class Claimed:
    """A queued run an ending run claimed, until it is seen running in that run's slot."""

    entry: QueueEntry
    slot: int
    claimant_run_id: str


@dataclass(frozen=True)
class Answer:
    """The first answer to a request with an Idempotency-Key, for its repeats."""

    result: EnqueueResult
    fingerprint: str | None


@dataclass
class QueueState:
    """Everything the queue carries across continue-as-new."""

    config: QueueConfig = field(default_factory=QueueConfig)
    queue: list[QueueEntry] = field(default_factory=list)
    next_number: int = 1
    # Answers already given to requests with an Idempotency-Key, by request id.
    answered: dict[str, Answer] = field(default_factory=dict)
    # Runs claimed by an ending run, by run id, not yet seen running in its slot.
    claimed: dict[str, Claimed] = field(default_factory=dict)


@dataclass(frozen=True)
class QueueInput:
    scope: Scope
    state: QueueState | None = None
