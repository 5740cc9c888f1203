"""What happened in a chaos run, as recorded while it happened: every request a client sent
and what came back, every fault the nemesis injected, and every process's life.

The rule this module keeps: a record says only what was observed, with the wall clock
(``time.time()``, the clock of the processes' log lines) read *before* an action began and
*after* it was seen to be over, so an interval always contains the event it stands for.
Nothing here interprets the records: that is the checker's job.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent_runner.ids import ScopeKind

OpKind = Literal["start", "status", "cancel", "limits", "pause", "resume"]
# "chaos": while faults are injected; "final": the end-of-run reads of every accepted run (and
# the limits and the pause put back as the run's own); "probe": the liveness probe after healing.
Phase = Literal["chaos", "final", "probe"]
ProcessRole = Literal["server", "api", "worker"]


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Op(_Record):
    """One HTTP request and its answer (or the exception that took its place)."""

    index: int
    client: str
    kind: OpKind
    phase: Phase
    api: int
    # start: {"body": {...}, "key": str | None}; status: {"run_id", "wait"}; cancel: {"run_id"};
    # limits (PUT /agents/limits): {"body": {"slots": n, ...}}; pause and resume (POST
    # /agents/scopes/{label}/pause, /resume): {"scope": the checker's name of it, "label"}
    request: dict[str, Any]
    started: float
    ended: float
    status: int | None = None
    body: Any = None
    # None when an answer came; else "timeout", "connect" (refused, reset) or "abandoned"
    # (still in flight when the run stopped waiting for it).
    error: str | None = None


class FaultRecord(_Record):
    """One injected fault: from just before it began to just after it was healed."""

    kind: str
    target: str
    started: float
    ended: float
    # What the fault makes unavailable while it lasts: "server", "api<i>", "worker<i>".
    affects: list[str] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)


class Window(_Record):
    """An interval when something was unavailable (the server down or paused: an outage)."""

    started: float
    ended: float
    cause: str


class ProcessLife(_Record):
    """One process, from its start to its end. ``ended_by`` "sigkill": ``ended`` is read after
    the process was seen dead, so nothing it did comes after it."""

    name: str
    role: ProcessRole
    index: int
    pid: int
    log: str
    started: float
    ended: float | None = None
    ended_by: Literal["sigkill", "sigterm", "exited"] | None = None


class RunConfig(_Record):
    seed: int
    minutes: float
    slots: int
    scope: ScopeKind
    users: list[str]
    agent_types: list[str]
    agent_duration_seconds: float
    heartbeat_timeout_seconds: float
    workflow_id: str
    # The stack's own workers (worker0 ..), each behind a proxy of its own.
    workers: int = 2
    # A limits change is in the record this long after its API took it up, or never (see
    # chaos.limits); None: whenever (runs from before the API bounded it).
    limits_made_within_seconds: float | None = None


class Replays(_Record):
    """Every workflow execution the run left on its server, replayed after the run against the
    workers' code (:mod:`chaos.replays`): how many, and each one whose replay failed."""

    checked: int
    failures: list[str]


class History(_Record):
    config: RunConfig
    began: float
    finished: float
    ops: list[Op]
    faults: list[FaultRecord]
    outages: list[Window]
    processes: list[ProcessLife]
    # None: a run from before replays were recorded.
    replays: Replays | None = None


class Recorder:
    """Collects the records of a run as they happen; :meth:`history` freezes them."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.began = time.time()
        self.ops: list[Op] = []
        self.faults: list[FaultRecord] = []
        self.outages: list[Window] = []
        self._lives: dict[str, ProcessLife] = {}
        self.replays: Replays | None = None

    def next_op_index(self) -> int:
        return len(self.ops)

    def op(self, op: Op) -> None:
        self.ops.append(op)

    def fault(self, fault: FaultRecord) -> None:
        self.faults.append(fault)

    def outage(self, window: Window) -> None:
        self.outages.append(window)

    def process_started(self, life: ProcessLife) -> None:
        self._lives[life.name] = life

    def process_ended(
        self, name: str, ended: float, ended_by: Literal["sigkill", "sigterm", "exited"]
    ) -> None:
        life = self._lives[name]
        if life.ended is None:
            self._lives[name] = life.model_copy(update={"ended": ended, "ended_by": ended_by})

    def history(self) -> History:
        return History(
            config=self.config,
            began=self.began,
            finished=time.time(),
            ops=sorted(self.ops, key=lambda op: op.started),
            faults=list(self.faults),
            outages=list(self.outages),
            processes=list(self._lives.values()),
            replays=self.replays,
        )


def write_history(history: History, path: Path) -> None:
    path.write_text(history.model_dump_json(indent=1))


def read_history(path: Path) -> History:
    return History.model_validate_json(path.read_text())
