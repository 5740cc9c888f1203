"""When each agent attempt worked, read from the agents' own log lines, and whether any two
overlapped: the measure of "one agent at a time"."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tests.helpers import JsonLines

END_EVENTS = {
    "agent_complete",
    "agent_error",
    "agent_cancelled",
    "agent_timed_out",
    "agent_lease_lost",
}


@dataclass(frozen=True)
class Span:
    run_id: str
    attempt: int
    worker_log: Path
    start: datetime
    end: datetime
    ended_by: str

    def overlaps(self, other: Span) -> bool:
        return self.start < other.end and other.start < self.end


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def agent_spans(
    logs: Iterable[tuple[Path, JsonLines]], killed_at: Mapping[Path, datetime]
) -> list[Span]:
    """One span per ``agent_start``: to the attempt's end line, or to when its worker was killed,
    or (still working) to now. An attempt that lost its lease ends at the earlier of its line and
    its lease's expiry: a paused process logs only when it wakes up, but it did no work past the
    lease (its next checkpoint refuses)."""
    spans = []
    for path, log in logs:
        lines = log.read()
        for index, line in enumerate(lines):
            if line.get("event") != "agent_start":
                continue
            end, ended_by = killed_at.get(path, datetime.now(UTC)), "killed or still working"
            for later in lines[index + 1 :]:
                same = (later.get("run_id"), later.get("attempt")) == (
                    line["run_id"],
                    line["attempt"],
                )
                if same and later.get("event") in END_EVENTS:
                    end, ended_by = _time(later["timestamp"]), later["event"]
                    for earlier in ("stopped_at", "lease_expired_at"):
                        if later.get(earlier):
                            end = min(end, _time(later[earlier]))
                    break
            spans.append(
                Span(line["run_id"], line["attempt"], path, _time(line["timestamp"]), end, ended_by)
            )
    return sorted(spans, key=lambda span: span.start)


def overlapping(spans: list[Span]) -> list[tuple[Span, Span]]:
    return [
        (first, second)
        for index, first in enumerate(spans)
        for second in spans[index + 1 :]
        if first.overlaps(second)
    ]


def smallest_gap_seconds(spans: list[Span]) -> float | None:
    """The shortest time between one attempt's end and the next one's start (negative: overlap)."""
    gaps = [
        (later.start - earlier.end).total_seconds() for earlier, later in itertools.pairwise(spans)
    ]
    return min(gaps) if gaps else None
