"""The fault kinds the nemesis draws from; one small class each (see :mod:`.base`).

Process, network and server faults (:mod:`.processes`, :mod:`.network`, :mod:`.server`); an
operator's CLI on runs and coordinators (:mod:`.runs`, :mod:`.coordinators`); and what another
system with write access to the namespace can send (issue 18): activity operations on a working
attempt (:mod:`.attempts`), forged updates and signals (:mod:`.messages`), workflows started on
slot ids and odd ids (:mod:`.starts`), and replicas whose environment disagrees
(:mod:`.replicas`).
"""

from __future__ import annotations

from chaos.faults.attempts import (
    ForgeComplete,
    ForgeFail,
    PauseActivity,
    ResetActivity,
    ShortHeartbeatThenCut,
)
from chaos.faults.base import Fault
from chaos.faults.coordinators import CancelCoordinator, TerminateCoordinator
from chaos.faults.messages import ForgeAdmit, ForgeClaim, ForgeReport, ForgeSignals
from chaos.faults.network import PartitionWorker
from chaos.faults.processes import KillApi, KillWorker, PauseApi, PauseWorker
from chaos.faults.replicas import OtherScopeReplicas, OtherSlotsApi, OtherSlotsWorker
from chaos.faults.runs import TerminateRun
from chaos.faults.server import PauseServer, RestartServer
from chaos.faults.starts import StartRunWorkflow, StartScopeWorkflow

ALL_KINDS: tuple[type[Fault], ...] = (
    KillWorker,
    PauseWorker,
    KillApi,
    PauseApi,
    RestartServer,
    PauseServer,
    TerminateRun,
    PartitionWorker,
    ForgeComplete,
    ForgeFail,
    ShortHeartbeatThenCut,
    PauseActivity,
    ResetActivity,
    ForgeClaim,
    ForgeReport,
    ForgeAdmit,
    ForgeSignals,
    StartRunWorkflow,
    StartScopeWorkflow,
    CancelCoordinator,
    TerminateCoordinator,
    OtherSlotsApi,
    OtherSlotsWorker,
    OtherScopeReplicas,
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
