"""The fault kinds the nemesis draws from; one small class each (see :mod:`.base`)."""

from __future__ import annotations

from chaos.faults.base import Fault
from chaos.faults.network import PartitionWorker
from chaos.faults.processes import KillApi, KillWorker, PauseApi, PauseWorker
from chaos.faults.runs import TerminateRun
from chaos.faults.server import PauseServer, RestartServer

ALL_KINDS: tuple[type[Fault], ...] = (
    KillWorker,
    PauseWorker,
    KillApi,
    PauseApi,
    RestartServer,
    PauseServer,
    TerminateRun,
    PartitionWorker,
)

__all__ = ["ALL_KINDS", "Fault", "kinds_named"]


def kinds_named(names: tuple[str, ...]) -> tuple[type[Fault], ...]:
    """The kinds called ``names`` (all of them for none, no kind at all for "none": a run
    without faults); an unknown name is an error."""
    if not names:
        return ALL_KINDS
    if names == ("none",):
        return ()
    known = {kind.kind: kind for kind in ALL_KINDS}
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"unknown fault kinds {unknown}; known: {sorted(known)}")
    return tuple(known[name] for name in names)
