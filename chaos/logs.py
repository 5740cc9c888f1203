"""The log lines the checker reads, parsed from the processes' JSON stdout: the agents' lives
(``agent_start`` and the one end line of each attempt, from workers) and the runs the APIs
accepted (``run_accepted``, with the Idempotency-Key, even when the answer never arrived).

The rule: one line in, one :class:`LogLine` out, times as epoch seconds on the history's clock;
a line that is not JSON, or not about one of these events, is skipped, never guessed at.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from chaos.history import ProcessLife

START_EVENT = "agent_start"
COMPLETE_EVENT = "agent_complete"
LEASE_LOST_EVENT = "agent_lease_lost"
END_EVENTS = frozenset(
    {COMPLETE_EVENT, "agent_error", "agent_cancelled", "agent_timed_out", LEASE_LOST_EVENT}
)
# Written as an attempt hands its result to its run, before agent_complete.
REPORTING_EVENT = "agent_reporting"
ACCEPTED_EVENT = "run_accepted"
# A coordinator's: a granted run found its slot's id held by another execution and waits first
# in line again; ``granted_at`` is when it was granted (its record forgets it).
SLOT_TAKEN_EVENT = "slot_taken_by_another_execution"
READ_EVENTS = END_EVENTS | {START_EVENT, ACCEPTED_EVENT, REPORTING_EVENT, SLOT_TAKEN_EVENT}


class LogLine(BaseModel):
    """One line about a run, from the process named ``process`` (a :class:`ProcessLife`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    process: str
    event: str
    at: float
    run_id: str
    attempt: int | None = None
    agent_type: str | None = None
    user_id: str | None = None
    fencing_token: int | None = None
    lease_expired_at: float | None = None
    # agent_complete and agent_lease_lost: when the agent stopped (its line may come later).
    stopped_at: float | None = None
    # agent_complete and agent_reporting: whether the line carries the result, and which.
    has_result: bool = False
    result: Any = None
    idempotency_key: str | None = None
    queue_position: int | None = None
    # slot_taken_by_another_execution: when the run had been granted.
    granted_at: float | None = None


def epoch(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def parse_line(process: str, text: str) -> LogLine | None:
    try:
        raw = json.loads(text)
    except ValueError:
        return None
    if not isinstance(raw, dict) or raw.get("event") not in READ_EVENTS:
        return None
    if not isinstance(raw.get("run_id"), str) or not isinstance(raw.get("timestamp"), str):
        return None
    expired = raw.get("lease_expired_at")
    stopped = raw.get("stopped_at")
    granted = raw.get("granted_at")
    return LogLine(
        process=process,
        event=raw["event"],
        at=epoch(raw["timestamp"]),
        run_id=raw["run_id"],
        attempt=raw.get("attempt"),
        agent_type=raw.get("agent_type"),
        user_id=raw.get("user_id"),
        fencing_token=raw.get("fencing_token"),
        lease_expired_at=epoch(expired) if isinstance(expired, str) else None,
        stopped_at=epoch(stopped) if isinstance(stopped, str) else None,
        has_result="result" in raw,
        result=raw.get("result"),
        idempotency_key=raw.get("idempotency_key"),
        queue_position=raw.get("queue_position"),
        granted_at=epoch(granted) if isinstance(granted, str) else None,
    )


def read_lines(process: str, path: Path) -> list[LogLine]:
    if not path.exists():
        return []
    parsed = (parse_line(process, text) for text in path.read_text(errors="replace").splitlines())
    return [line for line in parsed if line is not None]


def read_process_logs(processes: Iterable[ProcessLife], directory: Path) -> list[LogLine]:
    """Every line of interest from the APIs and workers of a run, in file order per process."""
    return [
        line
        for life in processes
        if life.role in ("api", "worker")
        for line in read_lines(life.name, directory / life.log)
    ]
