"""Synthetic chaos histories for the checker's tests: a clean one (every property holds), and a
builder to give it exactly one defect.

The clean story, one slot, global scope, times in seconds after T0 (granted: the coordinator's
grant time, each run's status ``started_at``):
  A  enqueue with key "key-a"  sent 0.0, 202 at 0.1 (starts at once)  granted 0.05, agent 0.2-1.2
  B  enqueue, no key           sent 0.5, 202 at 0.6 (queue_position 1) granted 1.25, agent 1.3-2.3
  C  reject, no key            sent 3.0, 202 at 3.1                   granted 3.05, agent 3.2-4.2
  key-a repeated (same body) -> A; with another body -> 422; a reject while busy -> 409;
  a 503 during a server outage 6-8; a client timeout; after healing the probe P: 10.2-11.2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent_runner.ids import ScopeKind
from chaos.history import FaultRecord, History, Op, ProcessLife, Replays, RunConfig, Window
from chaos.logs import LogLine

T0 = 1_800_000_000.0
USER = "9b64a3a7-f8e4-4f06-8e57-73b50b042f29"
POLICY = "policy-checker"
RESULTS = {"A": "approved", "B": "rejected", "C": "approved", "P": "approved"}
GRANTED = {"A": 0.05, "B": 1.25, "C": 3.05, "P": 10.05}


def iso(at: float) -> str:
    """A time after T0 as the API writes it."""
    return datetime.fromtimestamp(T0 + at, UTC).isoformat().replace("+00:00", "Z")


def body(on_busy: str, agent_type: str = POLICY) -> dict[str, str]:
    return {"agent_type": agent_type, "user_id": USER, "on_busy": on_busy}


@dataclass
class Story:
    ops: list[Op] = field(default_factory=list)
    lines: list[LogLine] = field(default_factory=list)
    faults: list[FaultRecord] = field(default_factory=list)
    outages: list[Window] = field(default_factory=list)
    processes: list[ProcessLife] = field(default_factory=list)
    # When each run was granted its slot, and whether its reads say so from the coordinator's
    # record (with its slot) or only from its execution's start.
    granted: dict[str, float] = field(default_factory=lambda: dict(GRANTED))
    recorded: bool = True
    # What replaying its workflows found (three executions: its settings, coordinator and run).
    replays: Replays | None = field(default_factory=lambda: Replays(checked=3, failures=[]))
    # The API's bound for making a limits change (None: a run from before it).
    limits_made_within: float | None = None

    def op(
        self,
        kind: str,
        sent: float,
        answered: float,
        request: dict[str, Any],
        status: int | None,
        answer: Any = None,
        phase: str = "chaos",
        error: str | None = None,
    ) -> None:
        self.ops.append(
            Op.model_validate(
                {
                    "index": len(self.ops),
                    "client": "c0",
                    "kind": kind,
                    "phase": phase,
                    "api": 0,
                    "request": request,
                    "started": T0 + sent,
                    "ended": T0 + answered,
                    "status": status,
                    "body": answer,
                    "error": error,
                }
            )
        )

    def start(
        self,
        sent: float,
        answered: float,
        on_busy: str,
        run_id: str | None,
        *,
        key: str | None = None,
        position: int | None = None,
        status: int = 202,
        agent_type: str = POLICY,
        phase: str = "chaos",
    ) -> None:
        answer = {"run_id": run_id, "queue_position": position} if status == 202 else {"detail": ""}
        request = {"body": body(on_busy, agent_type), "key": key}
        self.op("start", sent, answered, request, status, answer, phase)
        if status == 202 and run_id is not None:
            self.log("api0-1", "run_accepted", answered - 0.01, run_id, idempotency_key=key)

    def read(self, at: float, run_id: str, state: str, phase: str = "final", **more: Any) -> None:
        answer = {"run_id": run_id, "state": state, "queue_position": None, **more}
        if state == "DONE" and "result" not in more:
            answer["result"] = RESULTS.get(run_id)
        if run_id in self.granted and not answer.get("queue_position"):
            answer.setdefault("started_at", iso(self.granted[run_id]))
            answer.setdefault("slot", 0 if self.recorded else None)
        self.op("status", at, at + 0.05, {"run_id": run_id, "wait": None}, 200, answer, phase)

    def regrant(self, run_id: str, at: float | None, *, recorded: bool = True) -> None:
        """Say in every read of ``run_id`` that it was granted at ``at`` (None: never), from
        the coordinator's record or (``recorded`` False) only from its execution's start."""
        if at is None:
            self.granted.pop(run_id, None)
        else:
            self.granted[run_id] = at
        for index, op in enumerate(self.ops):
            if op.kind != "status" or op.request.get("run_id") != run_id or op.status != 200:
                continue
            body = dict(op.body)
            body.pop("started_at", None)
            body.pop("slot", None)
            if at is not None and not body.get("queue_position"):
                body["started_at"] = iso(at)
                body["slot"] = 0 if recorded else None
            self.ops[index] = op.model_copy(update={"body": body})

    def log(self, process: str, event: str, at: float, run_id: str, **more: Any) -> None:
        self.lines.append(
            LogLine.model_validate(
                {
                    "process": process,
                    "event": event,
                    "at": T0 + at,
                    "run_id": run_id,
                    "agent_type": POLICY,
                    "user_id": USER,
                    **more,
                }
            )
        )

    def agent(
        self,
        run_id: str,
        start: float,
        end: float | None,
        *,
        attempt: int = 1,
        worker: str = "worker0-1",
        ended_by: str = "agent_complete",
        **end_fields: Any,
    ) -> None:
        self.log(worker, "agent_start", start, run_id, attempt=attempt, fencing_token=attempt)
        if end is None:
            return
        if ended_by == "agent_complete" and "result" not in end_fields:
            end_fields = {"has_result": True, "result": RESULTS.get(run_id)}
        self.log(worker, ended_by, end, run_id, attempt=attempt, **end_fields)

    def life(
        self,
        name: str,
        role: str,
        started: float,
        ended: float | None = None,
        ended_by: str | None = None,
    ) -> None:
        self.processes.append(
            ProcessLife.model_validate(
                {
                    "name": name,
                    "role": role,
                    "index": int(name[len(role)]),
                    "pid": 100 + len(self.processes),
                    "log": f"{name}.log",
                    "started": T0 + started,
                    "ended": None if ended is None else T0 + ended,
                    "ended_by": ended_by,
                }
            )
        )

    def history(self, slots: int = 1, scope: ScopeKind = ScopeKind.GLOBAL) -> History:
        config = RunConfig(
            seed=1,
            minutes=0.2,
            slots=slots,
            scope=scope,
            users=[USER],
            agent_types=[POLICY],
            agent_duration_seconds=1.0,
            heartbeat_timeout_seconds=3.0,
            workflow_id="chaos",
            limits_made_within_seconds=self.limits_made_within,
        )
        return History(
            config=config,
            began=T0 - 1.0,
            finished=T0 + 12.0,
            ops=self.ops,
            faults=self.faults,
            outages=self.outages,
            processes=self.processes,
            replays=self.replays,
        )


def clean(
    *, a_agent: tuple[float, float] = (0.2, 1.2), b_agent: tuple[float, float] | None = (1.3, 2.3)
) -> Story:
    """The clean story; ``a_agent``/``b_agent``: when A's and B's agents work (None: B never
    starts)."""
    story = Story()
    story.life("api0-1", "api", -1.0, 12.0, "sigterm")
    story.life("worker0-1", "worker", -1.0, 12.0, "sigterm")
    story.life("worker1-1", "worker", -1.0, 12.0, "sigterm")
    story.start(0.0, 0.1, "enqueue", "A", key="key-a")
    story.start(0.5, 0.6, "enqueue", "B", position=1)
    story.start(0.8, 0.9, "reject", None, status=409)
    story.start(3.0, 3.1, "reject", "C")
    story.start(5.0, 5.1, "enqueue", "A", key="key-a")
    story.start(5.2, 5.3, "reject", None, key="key-a", status=422, agent_type="document-extractor")
    story.outages.append(Window(started=T0 + 6.0, ended=T0 + 8.0, cause="paused (SIGSTOP)"))
    story.start(6.5, 7.0, "reject", None, status=503)
    story.op("status", 7.5, 17.5, {"run_id": "A", "wait": 5.0}, None, error="timeout")
    story.agent("A", *a_agent)
    if b_agent is not None:
        story.agent("B", *b_agent)
    story.agent("C", 3.2, 4.2)
    story.read(1.0, "A", "RUNNING", phase="chaos")
    for run_id in "ABC":
        story.read(9.0, run_id, "DONE")
    story.start(10.0, 10.1, "enqueue", "P", key="probe-0", phase="probe")
    story.agent("P", 10.2, 11.2)
    story.read(11.5, "P", "DONE", phase="probe")
    return story
