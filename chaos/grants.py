"""When each accepted run got its slot: the input of the FIFO property, from one of two sources.

The rule: a :class:`Grant` is an interval the grant certainly lies in, never a guess. Its
source is named by the checker's ``fifo_grants`` option:

- ``started_at`` (the default): the run's status says when its scope's coordinator granted it
  a slot (``started_at``, the coordinator's clock; runs granted in one coordinator task share
  it). A read that carries the run's ``slot`` comes from the coordinator's record: the grant is
  exactly then (the last such read counts, since a grant whose slot turned out to be held from
  outside is made again). A read without it comes from the slot's execution alone (the
  coordinator no longer keeps the record): that execution started after the grant, so it is
  only an upper bound, and the run's request a lower one.
- ``agent_start`` (the fallback of the design before coordinators): bounded from above by the
  run's first ``agent_start`` (and by its 202 when that said it started at once), and from
  below by that start minus ``tolerance_seconds`` of *clean* time (no server outage, no worker
  fault, nor the grace after one): an agent may start that long after its grant.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from chaos.facts import Accepted
from chaos.history import Op
from chaos.intervals import Interval, walk_back
from chaos.logs import SLOT_TAKEN_EVENT, START_EVENT, LogLine, epoch

FifoGrants = Literal["started_at", "agent_start"]
EXACT = "the coordinator's record"
UPPER_BOUND = "the slot execution's start"


@dataclass(frozen=True)
class Grant:
    run_id: str
    # The grant happened within [earliest, latest].
    earliest: float
    latest: float
    source: str = ""


# scope -> its runs' grants, by ``latest``.
GrantOrder = Mapping[str, Sequence[Grant]]


def _ordered(order: Mapping[str, list[Grant]]) -> dict[str, list[Grant]]:
    return {scope: sorted(grants, key=lambda g: g.latest) for scope, grants in order.items()}


def grants_from_started_at(
    accepted: Mapping[str, Accepted], reads: Mapping[str, list[Op]]
) -> dict[str, list[Grant]]:
    order: dict[str, list[Grant]] = defaultdict(list)
    for run_id, run in accepted.items():
        recorded: str | None = None
        executed: str | None = None
        for op in reads.get(run_id, []):
            started = op.body.get("started_at") if isinstance(op.body, dict) else None
            if not isinstance(started, str):
                continue
            if op.body.get("slot") is not None:
                recorded = started
            else:
                executed = started
        if recorded is not None:
            at = epoch(recorded)
            order[run.scope].append(Grant(run_id, at, at, EXACT))
        elif executed is not None:
            at = epoch(executed)
            order[run.scope].append(Grant(run_id, min(run.sent, at), at, UPPER_BOUND))
    return _ordered(order)


def grants_from_agent_starts(
    accepted: Mapping[str, Accepted],
    lines: Sequence[LogLine],
    tolerance_seconds: float,
    unclean: list[Interval],
) -> dict[str, list[Grant]]:
    first: dict[str, float] = {}
    for line in lines:
        if line.event == START_EVENT and line.run_id in accepted:
            first[line.run_id] = min(first.get(line.run_id, line.at), line.at)
    order: dict[str, list[Grant]] = defaultdict(list)
    for run_id, started in first.items():
        run = accepted[run_id]
        latest = min(started, run.answered) if run.queue_position is None else started
        earliest = max(run.sent, walk_back(started, tolerance_seconds, unclean))
        order[run.scope].append(Grant(run_id, min(earliest, latest), latest, START_EVENT))
    return _ordered(order)


def first_grants(grants: GrantOrder, lines: Sequence[LogLine]) -> dict[str, list[Grant]]:
    """``grants`` with each run whose slot's id another execution held (its coordinator logged
    ``slot_taken_by_another_execution``) granted when it was first: its record forgets that
    grant, and it waits first in line again, so it was served in order then (the suite's chaos
    run: a squatter on the slot, the run re-granted 11 s later, read as overtaken by a run
    granted beside it the first time). Only ``order`` judges by the first grant."""
    first: dict[str, float] = {}
    for line in lines:
        if line.event == SLOT_TAKEN_EVENT and line.granted_at is not None:
            first[line.run_id] = min(first.get(line.run_id, line.granted_at), line.granted_at)
    return _ordered(
        {
            scope: [
                replace(grant, earliest=first[grant.run_id], latest=first[grant.run_id])
                if grant.run_id in first and first[grant.run_id] < grant.earliest
                else grant
                for grant in scoped
            ]
            for scope, scoped in grants.items()
        }
    )
