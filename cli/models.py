"""What the command line reads from a run's status, and how one status follows another.

The command line keeps the API's JSON as it came (``--json`` prints it unchanged) and reads
only the fields it shows; a field it does not know is ignored, a missing one is None."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The server's own types: the command line reads the same shapes the API writes.
from agent_runner.contract import Progress
from agent_runner.status import AttemptFailure

FINAL_STATES = ("DONE", "ERROR")


@dataclass(frozen=True)
class RunStatus:
    """A run's status (``GET /agents/status/{run_id}``), and the JSON it was read from."""

    raw: dict[str, Any]
    run_id: str
    state: str
    attempt: int
    queue_position: int | None
    waiting_for: str | None
    progress: Progress | None
    last_failure: AttemptFailure | None

    @classmethod
    def of(cls, raw: Any) -> RunStatus:
        body: dict[str, Any] = raw if isinstance(raw, dict) else {}
        progress = body.get("progress")
        failure = body.get("last_failure")
        return cls(
            raw=body,
            run_id=str(body.get("run_id", "")),
            state=str(body.get("state", "")),
            attempt=int(body.get("attempt") or 0),
            queue_position=body.get("queue_position"),
            waiting_for=body.get("waiting_for"),
            progress=(
                Progress(
                    attempt=int(progress.get("attempt", 0)),
                    fraction=float(progress.get("fraction", 0)),
                    message=str(progress.get("message", "")),
                )
                if isinstance(progress, dict)
                else None
            ),
            last_failure=(
                AttemptFailure(
                    attempt=int(failure.get("attempt", 0)),
                    reason=str(failure.get("reason", "")),
                    retrying=bool(failure.get("retrying")),
                )
                if isinstance(failure, dict)
                else None
            ),
        )

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def error(self) -> str:
        return str(self.raw.get("error") or "no reason given")

    @property
    def result(self) -> Any:
        return self.raw.get("result")


def state_event(status: RunStatus) -> str:
    """The event name of the events stream for a status that has just been reached."""
    if status.state == "PENDING":
        return "queued" if status.queue_position is not None else "pending"
    return {"RUNNING": "running", "DONE": "done", "ERROR": "error"}.get(status.state, "pending")


def transitions(previous: RunStatus | None, current: RunStatus) -> list[str]:
    """The events that lead from ``previous`` to ``current``, named as the events stream names
    them: what a follower without the stream reports, and what both ways of following print."""
    if previous is None:
        first = ["attempt_failed"] if current.last_failure else []
        progress = ["progress"] if current.progress is not None else []
        return [*first, state_event(current), *progress]
    events = []
    if current.last_failure and current.last_failure != previous.last_failure:
        events.append("attempt_failed")
    moved = (current.state, current.queue_position) != (previous.state, previous.queue_position)
    if (
        moved
        or (current.state == "RUNNING" and current.attempt != previous.attempt)
        or (current.state == "PENDING" and current.waiting_for != previous.waiting_for)
    ):
        events.append(state_event(current))
    # A poll may see a new state and new progress at once: both are told.
    if current.progress != previous.progress and current.progress is not None:
        events.append("progress")
    return events
