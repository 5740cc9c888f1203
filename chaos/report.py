"""What a run tells people: the verdict table on stdout, and the history and the verdict as JSON
in the run's directory (``history.json``, ``verdict.json``) for whoever digs further."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from chaos.facts import accepted_runs, attached_id, state_of, status_reads
from chaos.fair import WEIGHTS
from chaos.history import History
from chaos.verdicts import Verdict

EXAMPLES = 3
EXAMPLE_CHARS = 400


def summary(history: History) -> dict[str, Any]:
    accepted = accepted_runs(history)
    reads = status_reads(history)
    ends = Counter(
        state_of(reads[run_id][-1]) if reads.get(run_id) else "never read" for run_id in accepted
    )
    answers = Counter(
        f"{op.kind} {op.status if op.error is None else op.error}" for op in history.ops
    )
    return {
        "seed": history.config.seed,
        "seconds": round(history.finished - history.began, 1),
        "requests": len(history.ops),
        "answers": dict(sorted(answers.items())),
        "runs_accepted": len(accepted),
        "runs_accepted_by_on_busy": dict(Counter(run.on_busy for run in accepted.values())),
        "runs_accepted_by_priority": dict(
            sorted(Counter(run.priority for run in accepted.values()).items())
        ),
        "runs_with_queue_timeout": sum(1 for run in accepted.values() if run.queue_timeout),
        "attach_answered_200": sum(1 for op in history.ops if attached_id(op) is not None),
        "runs_ended": dict(ends),
        "runs_ended_with_error": dict(
            Counter(
                str(reads[run_id][-1].body.get("error"))
                for run_id in accepted
                if reads.get(run_id) and state_of(reads[run_id][-1]) == "ERROR"
            )
        ),
        "limit_changes": [
            f"{op.request['body'].get('slots')}"
            f"{' fair' if op.request['body'].get('fair_shares') else ''}: {op.status or op.error}"
            for op in history.ops
            if op.kind == "limits"
        ],
        "pauses": [
            f"{op.kind} {op.request.get('scope')}: {op.status or op.error}"
            for op in history.ops
            if op.kind in ("pause", "resume")
        ],
        "fair_runs_accepted": dict(
            Counter(run.fair_key for run in accepted.values() if run.fair_key in WEIGHTS)
        ),
        "faults": dict(Counter(fault.kind for fault in history.faults)),
        "outage_seconds": round(sum(w.ended - w.started for w in history.outages), 1),
    }


def table(verdict: Verdict) -> str:
    rows = [f"{'property':<10} {'checked':>8} {'violations':>10}  verdict  title"]
    for result in verdict.properties:
        rows.append(
            f"{result.name:<10} {result.checked:>8} {len(result.violations):>10}  "
            f"{'PASS' if result.passed else 'FAIL':<7}  {result.title}"
        )
        for example in result.violations[:EXAMPLES]:
            rows.append(f"    ! {example[:EXAMPLE_CHARS]}")
        if len(result.violations) > EXAMPLES:
            rows.append(f"    ! ... and {len(result.violations) - EXAMPLES} more")
        for note in result.notes:
            rows.append(f"    - {note[:EXAMPLE_CHARS]}")
    rows.append(f"verdict: {'PASS' if verdict.passed else 'FAIL ' + ', '.join(verdict.failed())}")
    return "\n".join(rows)


def write_verdict(verdict: Verdict, history: History, path: Path) -> None:
    document = {
        "passed": verdict.passed,
        "failed": verdict.failed(),
        "summary": summary(history),
        "properties": [result.model_dump() for result in verdict.properties],
    }
    path.write_text(json.dumps(document, indent=1))
