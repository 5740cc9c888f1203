"""Property (h): only a granted run runs an agent.

Every ``agent_start`` must belong to a run that some answer named: a client's 202, the
coordinator's answer to an ``admit`` the nemesis sent itself (another system starting runs, as
issue 18 allows), or a status or cancel answer of the API. A run is named only after its scope's
coordinator accepted it, so an agent of any other run id (a workflow started from outside on a
slot id or an odd id, an input that named a run of its own) worked without a grant: a
violation, one per run id.

What it cannot see: a run the coordinator accepted for an ``admit`` whose answer never came
back (the nemesis's CLI timed out) would count as ungranted; such calls are rare and listed in
the fault's record.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence

from chaos.facts import stamp
from chaos.logs import START_EVENT, LogLine
from chaos.verdicts import PropertyResult

NAME = "granted"
TITLE = "every agent belongs to a run an answer named"


def check_granted(named: Collection[str], lines: Sequence[LogLine]) -> PropertyResult:
    starts: dict[str, list[LogLine]] = defaultdict(list)
    for line in lines:
        if line.event == START_EVENT:
            starts[line.run_id].append(line)
    violations = [
        f"{run_id}: {len(found)} agent_start no answer named, first on {found[0].process} at "
        f"{stamp(found[0].at)} (attempt {found[0].attempt}, token {found[0].fencing_token})"
        for run_id, found in sorted(starts.items())
        if run_id not in named
    ]
    checked = sum(len(found) for found in starts.values())
    return PropertyResult(name=NAME, title=TITLE, checked=checked, violations=violations)
