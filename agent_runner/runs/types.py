"""What the runs package hands out: where runs live, a run's state and status, a page of runs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from agent_runner.locations import Scope, ScopeKind, scope_for


@dataclass(frozen=True)
class RunTarget:
    """Where runs live and how many at once: the base workflow id, the workers' task queue, the
    scopes (one set of ``slots`` and one queue of at most ``queue_max`` per scope), and how long
    one call to Temporal may take. Build it with ``Settings.run_target()``."""

    workflow_id: str
    task_queue: str
    rpc_timeout: timedelta
    scope_kind: ScopeKind = ScopeKind.GLOBAL
    slots: int = 1
    queue_max: int = 1000

    def scope(self, *, agent_type: str, user_id: str) -> Scope:
        return scope_for(self.workflow_id, self.scope_kind, agent_type=agent_type, user_id=user_id)


class RunState(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"
    ERROR = "ERROR"


@dataclass(frozen=True)
class RunStatus:
    run_id: str
    agent_type: str | None
    user_id: str | None
    state: RunState
    result: Any
    error: str | None
    attempt: int
    started_at: datetime | None
    finished_at: datetime | None
    # Waiting in a queue: 1 is next. None once started (or when it never waited).
    queue_position: int | None = None
    queued_at: datetime | None = None
    # The Temporal execution that holds the run: its workflow id and run id.
    workflow_id: str | None = None
    temporal_run_id: str | None = None
    # How far the working attempt is, as its agent last reported.
    progress: Progress | None = None
    # The last attempt that failed, while the run goes on (or ended with it).
    last_failure: AttemptFailure | None = None
    # Why a PENDING run has not started: WAITING_QUEUE, WAITING_PREVIOUS_AGENT, WAITING_WORKER.
    waiting_for: str | None = None

    @property
    def is_final(self) -> bool:
        return self.state in (RunState.DONE, RunState.ERROR)


@dataclass(frozen=True)
class Progress:
    fraction: float
    message: str
    attempt: int


@dataclass(frozen=True)
class AttemptFailure:
    attempt: int
    reason: str
    # Whether another attempt follows.
    retrying: bool


WAITING_QUEUE = "queue"
WAITING_PREVIOUS_AGENT = "previous_agent"
WAITING_WORKER = "worker"


@dataclass(frozen=True)
class RunSummary:
    """A run as the list shows it; its result and error are on its status."""

    run_id: str
    agent_type: str | None
    user_id: str | None
    state: RunState
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class RunPage:
    runs: list[RunSummary]
    next_page_token: str | None
