"""When each agent attempt worked, read from the workers' own lines: the measure of "at most N
agents at once".

The rule: a span runs from its ``agent_start`` to the first end line of the same attempt in the
same process; an ``agent_lease_lost`` span ends at the earlier of that line and its
``lease_expired_at`` (the attempt did no work past its lease, even if it logged later, paused);
a span with no end line lasts until its process ended (for a SIGKILL, the time the process was
seen dead), or, if it never ended, until the end of the run. Nothing else shortens a span.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from chaos.facts import stamp
from chaos.history import ProcessLife
from chaos.logs import END_EVENTS, LEASE_LOST_EVENT, START_EVENT, LogLine


@dataclass(frozen=True)
class Span:
    run_id: str
    attempt: int | None
    process: str
    agent_type: str | None
    user_id: str | None
    fencing_token: int | None
    start: float
    end: float
    ended_by: str

    def describe(self) -> str:
        return (
            f"{self.run_id} attempt {self.attempt} on {self.process} "
            f"{stamp(self.start)}-{stamp(self.end)} ({self.ended_by})"
        )


def _end_of(line: LogLine) -> float:
    """When the agent stopped: its end line's time, or earlier when the line says so (an
    agent_complete written once its paused worker resumed and its report was taken)."""
    end = line.at
    if line.stopped_at is not None:
        end = min(end, line.stopped_at)
    if line.event == LEASE_LOST_EVENT and line.lease_expired_at is not None:
        end = min(end, line.lease_expired_at)
    return end


def agent_spans(
    lines: Iterable[LogLine], processes: Sequence[ProcessLife], run_finished: float
) -> list[Span]:
    """One span per ``agent_start`` line, ``lines`` in each process's file order."""
    by_process: dict[str, list[LogLine]] = defaultdict(list)
    for line in lines:
        by_process[line.process].append(line)
    lives = {life.name: life for life in processes}
    spans: list[Span] = []
    for process, process_lines in by_process.items():
        life = lives.get(process)
        if life is not None and life.ended is not None:
            open_end, open_reason = life.ended, f"no end line; process ended ({life.ended_by})"
        else:
            open_end, open_reason = run_finished, "no end line; process still running at the end"
        for index, line in enumerate(process_lines):
            if line.event != START_EVENT:
                continue
            end, ended_by = open_end, open_reason
            for later in process_lines[index + 1 :]:
                same_attempt = (later.run_id, later.attempt) == (line.run_id, line.attempt)
                if same_attempt and later.event in END_EVENTS:
                    end, ended_by = _end_of(later), later.event
                    break
            spans.append(
                Span(
                    run_id=line.run_id,
                    attempt=line.attempt,
                    process=process,
                    agent_type=line.agent_type,
                    user_id=line.user_id,
                    fencing_token=line.fencing_token,
                    start=line.at,
                    end=end,
                    ended_by=ended_by,
                )
            )
    return sorted(spans, key=lambda span: span.start)
