"""What the runs package hands out: where runs live, a run's state and status, a page of runs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any


@dataclass(frozen=True)
class RunTarget:
    """Where the singleton lives: the fixed workflow id and the workers' task queue, and how long
    one call to Temporal may take. Build it with ``Settings.run_target()``."""

    workflow_id: str
    task_queue: str
    rpc_timeout: timedelta


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

    @property
    def is_final(self) -> bool:
        return self.state in (RunState.DONE, RunState.ERROR)


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
