"""Property (h): only a granted run runs an agent.

Every ``agent_start`` must belong to a run that some answer named: a client's 202, the
coordinator's answer to an ``admit`` the nemesis sent itself (another system starting runs, as
issue 18 allows), or a status or cancel answer of the API. A run is named only after its scope's
coordinator accepted it, so an agent of any other run id (a workflow started from outside on a
slot id or an odd id, an input that named a run of its own) worked without a grant: a
violation, one per run id.

A run whose 202 was lost on its way is granted too, and the checker says so in a note instead:
one an API logged as accepted (``run_accepted``), or one that a start of its scope and agent type
explains, sent before its agent started and never answered (a timeout, a refused connection, a
503), without an Idempotency-Key that later named another run; one such start explains one run,
and only a run id in the canonical form the coordinator mints.

A start answered ``503`` was not made, the API promises (docs/api.md), unless the server or
the coordinator's worker stopped answering after the coordinator decided: a run explained only
by a 503 with no server outage and no worker fault around it (STRANDED_SECONDS) is a violation.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from agent_runner.ids import parse_run_id
from chaos.check_api import STRANDED_SECONDS
from chaos.facts import named_runs, scope_of, stamp, start_body, start_key
from chaos.history import History, Op
from chaos.logs import ACCEPTED_EVENT, START_EVENT, LogLine
from chaos.verdicts import PropertyResult

NAME = "granted"
TITLE = "every agent belongs to a run an answer named"


def _scope_of_run_id(history: History, run_id: str) -> str | None:
    ref = parse_run_id(history.config.workflow_id, run_id)
    if ref is None:
        return None
    key = ref.scope.key
    return scope_of(history.config.scope, key, key)


def _unanswered_starts(history: History) -> list[Op]:
    """Starts whose answer never came, oldest first: any of them may have made a run."""
    answered_keys = {start_key(op) for op in history.ops if op.kind == "start" and op.status == 202}
    return sorted(
        (
            op
            for op in history.ops
            if op.kind == "start"
            and (op.error is not None or op.status == 503)
            and (start_key(op) is None or start_key(op) not in answered_keys)
        ),
        key=lambda op: op.started,
    )


def _server_or_worker_down(history: History, op: Op) -> bool:
    """Whether the server was out, or a worker faulted, while ``op`` was open or just before."""
    windows = [(outage.started, outage.ended) for outage in history.outages]
    windows += [
        (fault.started, fault.ended if fault.ended is not None else history.finished)
        for fault in history.faults
        if any(name.startswith("worker") for name in fault.affects)
    ]
    return any(
        op.started <= ended + STRANDED_SECONDS and op.ended >= started for started, ended in windows
    )


def check_granted(history: History, lines: Sequence[LogLine]) -> PropertyResult:
    named = named_runs(history)
    logged = {line.run_id for line in lines if line.event == ACCEPTED_EVENT}
    starts: dict[str, list[LogLine]] = defaultdict(list)
    for line in lines:
        if line.event == START_EVENT:
            starts[line.run_id].append(line)
    unnamed = sorted(
        (found[0] for run_id, found in starts.items() if run_id not in named),
        key=lambda line: line.at,
    )
    lost = _unanswered_starts(history)
    from_log, from_lost, violations = 0, 0, []
    for first in unnamed:
        if first.run_id in logged:
            from_log += 1
            continue
        scope = _scope_of_run_id(history, first.run_id)
        match = next(
            (
                op
                for op in lost
                if scope is not None
                and op.started < first.at
                and start_body(op).get("agent_type") == first.agent_type
                and scope_of(
                    history.config.scope,
                    start_body(op).get("agent_type"),
                    start_body(op).get("user_id"),
                )
                == scope
            ),
            None,
        )
        if match is not None:
            lost.remove(match)
            from_lost += 1
            if match.status == 503 and not _server_or_worker_down(history, match):
                violations.append(
                    f"{first.run_id}: made by a start answered 503 at {stamp(match.ended)} while "
                    "the server and every worker answered"
                )
            continue
        violations.append(
            f"{first.run_id}: {len(starts[first.run_id])} agent_start no answer named, first on "
            f"{first.process} at {stamp(first.at)} (attempt {first.attempt}, token "
            f"{first.fencing_token})"
        )
    checked = sum(len(found) for found in starts.values())
    notes = [
        f"runs whose 202 was lost, with agents: {from_log} logged accepted by an API, "
        f"{from_lost} explained by a start that got no answer"
    ]
    return PropertyResult(
        name=NAME, title=TITLE, checked=checked, violations=violations, notes=notes
    )
