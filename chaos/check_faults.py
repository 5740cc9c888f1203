"""Property (i): every fault did what it was meant to.

A fault the nemesis could not inject or heal (its command failed, its process did not start)
proves nothing about the properties above: the run would pass without the fault it claims to
have made. So a fault whose details say ``failed`` is a violation; one ``skipped`` (nothing to
strike at that moment, say no open run) is counted in a note. A replica started with another N
must have said so in its log (``deployment_settings_differ``): a replica that quietly took its
own N is the bug of issue 18, case 8.
"""

from __future__ import annotations

from chaos.history import History
from chaos.verdicts import PropertyResult

NAME = "faults"
TITLE = "every fault was injected and healed as planned"
SAYS_IT_DIFFERS = ("other-slots-api", "other-slots-worker")


def check_faults(history: History) -> PropertyResult:
    violations: list[str] = []
    skipped = 0
    for fault in history.faults:
        where = f"{fault.kind} on {fault.target} at {fault.started:.3f}"
        if "failed" in fault.details:
            last = str(fault.details["failed"]).strip().splitlines()[-1:]
            violations.append(f"{where} failed: {' '.join(last)}")
        elif "skipped" in fault.details:
            skipped += 1
        elif fault.kind in SAYS_IT_DIFFERS:
            heal = fault.details.get("heal") or {}
            if heal.get("logged_settings_differ") is False:
                violations.append(f"{where}: the replica never logged deployment_settings_differ")
    notes = [f"{skipped} skipped (nothing to strike at the time)"] if skipped else []
    return PropertyResult(
        name=NAME, title=TITLE, checked=len(history.faults), violations=violations, notes=notes
    )
