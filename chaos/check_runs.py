"""Properties of each accepted run: (b) it ends DONE or ERROR, and stays so, whatever its
priority (none starves: a run of priority 5 too is read until it ends); (c) a DONE run's
agent completed exactly once and an ERROR run's at most once, and a DONE status reports the
result its ``agent_complete`` line logged.

A process SIGKILLed between its run taking the result and its ``agent_complete`` line cannot
write that line: such a completion is read from the attempt's ``agent_reporting`` line (written
just before the report) when that attempt has no end line and its process was killed, and the
result it carries is the one the DONE status reports. Those are counted in a note.

A run's end is its last status read (reads arrive in order; the end-of-run reads come last). A
final state followed by a different state in a read that began after the final one arrived
is a violation too: a run that ended does not start again.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence

from chaos.facts import FINAL_STATES, Accepted, stamp, state_of, terminated_between
from chaos.history import Op, ProcessLife
from chaos.logs import COMPLETE_EVENT, END_EVENTS, REPORTING_EVENT, LogLine
from chaos.verdicts import PropertyResult

FINAL_NAME = "final"
FINAL_TITLE = "every 202 ends DONE or ERROR"
ONCE_NAME = "once"
ONCE_TITLE = "DONE completed exactly once, ERROR at most once"


def check_final(
    accepted: Mapping[str, Accepted],
    reads: Mapping[str, list[Op]],
    cancelled: Collection[str],
    fresh: Callable[[Op], bool],
    unanswered: Mapping[str, list[Op]],
    terminated: dict[str, list[float]],
) -> PropertyResult:
    """``cancelled``: the runs a cancel request was sent for (answered or not); ``fresh``:
    whether a read is held to be current; ``unanswered``: each run's reads that got no 200;
    ``terminated``: when each scope's coordinator was terminated."""
    violations: list[str] = []
    uncancelled_errors: Counter[str] = Counter()
    by_priority: dict[int, Counter[str]] = defaultdict(Counter)
    for run_id, run in accepted.items():
        run_reads = reads.get(run_id, [])
        by_priority[run.priority][str(state_of(run_reads[-1]) if run_reads else None)] += 1
        cause = terminated_between(terminated, run.scope, run.sent, float("inf"))
        if not run_reads:
            got = _got(unanswered.get(run_id, []), 0.0)
            violations.append(
                f"{run_id}: accepted at {stamp(run.answered)}, no status ever read; its reads "
                f"got {got}{cause}"
            )
            continue
        last = run_reads[-1]
        if state_of(last) not in FINAL_STATES:
            then = _got(unanswered.get(run_id, []), last.ended)
            violations.append(
                f"{run_id} ({run.on_busy}, priority {run.priority}, queue_position "
                f"{run.queue_position}, accepted at "
                f"{stamp(run.answered)}): last read at {stamp(last.ended)} says "
                f"{state_of(last)}, {_brief(last)}; later reads got {then}{cause}"
            )
            continue
        changed = _changed_after_final(run_reads, fresh)
        if changed is not None:
            violations.append(f"{run_id}: {changed}")
        if state_of(last) == "ERROR" and run_id not in cancelled:
            uncancelled_errors[str(last.body.get("error"))[:80]] += 1
    # Not judged: an ERROR may follow a terminate, attempts lost to faults, the watchdog...
    notes = [f"ERROR runs no client cancelled, by error: {dict(uncancelled_errors) or 'none'}"]
    notes.append(
        "last state by priority: "
        + "; ".join(f"{p}: {dict(ends)}" for p, ends in sorted(by_priority.items()))
    )
    return PropertyResult(
        name=FINAL_NAME,
        title=FINAL_TITLE,
        checked=len(accepted),
        violations=violations,
        notes=notes,
    )


def _changed_after_final(run_reads: Sequence[Op], fresh: Callable[[Op], bool]) -> str | None:
    """A read, sent after a final state was read and held to be current, that says otherwise
    (an old state may come from an API in an outage: the README allows it)."""
    first_final = next((op for op in run_reads if state_of(op) in FINAL_STATES), None)
    if first_final is None:
        return None
    for later in run_reads:
        contradicts = state_of(later) != state_of(first_final)
        if later.started > first_final.ended and contradicts and fresh(later):
            return (
                f"read {state_of(first_final)} at {stamp(first_final.ended)}, then "
                f"{state_of(later)} in a read sent at {stamp(later.started)}"
            )
    return None


def _got(ops: Sequence[Op], after: float) -> dict[str, int]:
    """What the reads sent after ``after`` got instead of a 200."""
    return dict(Counter(str(op.status or op.error) for op in ops if op.started >= after))


def _brief(op: Op) -> str:
    body = op.body if isinstance(op.body, dict) else {}
    shown = {key: body.get(key) for key in ("attempt", "queue_position", "waiting_for", "error")}
    return ", ".join(f"{key} {value}" for key, value in shown.items() if value is not None)


def check_once(
    accepted: Mapping[str, Accepted],
    reads: Mapping[str, list[Op]],
    lines: Sequence[LogLine],
    processes: Sequence[ProcessLife],
) -> PropertyResult:
    completes: dict[str, list[LogLine]] = defaultdict(list)
    ends: dict[str, list[LogLine]] = defaultdict(list)
    for line in lines:
        if line.event == COMPLETE_EVENT:
            completes[line.run_id].append(line)
        elif line.event in END_EVENTS:
            ends[line.run_id].append(line)
    killed_reports = _killed_reports(lines, processes)
    violations: list[str] = []
    checked = 0
    killed_completions = 0
    for run_id in accepted:
        run_reads = reads.get(run_id, [])
        final = state_of(run_reads[-1]) if run_reads else None
        if final not in FINAL_STATES:
            continue  # property (b) says so
        checked += 1
        done = completes[run_id]
        if final == "DONE" and not done and len(killed_reports[run_id]) == 1:
            done = killed_reports[run_id]
            killed_completions += 1
        if (final == "DONE" and len(done) != 1) or (final == "ERROR" and len(done) > 1):
            listed = "; ".join(
                f"attempt {line.attempt} token {line.fencing_token} on {line.process} at "
                f"{stamp(line.at)} result {line.result!r}"
                for line in done
            )
            if not done:
                listed = "its attempts ended " + (
                    "; ".join(
                        f"{line.event} (attempt {line.attempt} on {line.process} at "
                        f"{stamp(line.at)})"
                        for line in ends[run_id]
                    )
                    or "without an end line"
                )
            violations.append(f"{run_id} is {final} with {len(done)} agent_complete: {listed}")
            continue
        if final == "DONE" and done[0].has_result:
            reported = run_reads[-1].body.get("result")
            if reported != done[0].result:
                violations.append(
                    f"{run_id} is DONE with result {reported!r}, its agent_complete logged "
                    f"{done[0].result!r}"
                )
    notes = [
        f"completions read from agent_reporting (process killed before agent_complete): "
        f"{killed_completions}",
        f"agent_complete lines of runs no 202 named: "
        f"{sum(1 for run_id in completes if run_id not in accepted)}",
        f"runs with more than one agent_start attempt: {_retried(lines)}",
    ]
    return PropertyResult(
        name=ONCE_NAME, title=ONCE_TITLE, checked=checked, violations=violations, notes=notes
    )


def _killed_reports(
    lines: Sequence[LogLine], processes: Sequence[ProcessLife]
) -> dict[str, list[LogLine]]:
    """Per run, its ``agent_reporting`` lines whose attempt wrote no end line in a process that
    was then SIGKILLed: completions that may have happened with no way left to log them."""
    killed = {life.name for life in processes if life.ended_by == "sigkill"}
    ended = {
        (line.process, line.run_id, line.attempt) for line in lines if line.event in END_EVENTS
    }
    reports: dict[str, list[LogLine]] = defaultdict(list)
    for line in lines:
        if (
            line.event == REPORTING_EVENT
            and line.process in killed
            and (line.process, line.run_id, line.attempt) not in ended
        ):
            reports[line.run_id].append(line)
    return reports


def _retried(lines: Sequence[LogLine]) -> int:
    starts = Counter(line.run_id for line in lines if line.event == "agent_start")
    return sum(1 for count in starts.values() if count > 1)
