"""Everything that crosses Temporal, in one place: workflow, update, query, signal and activity
names with the types they carry, and the records the workflows publish.

Plain dataclasses, one in and one out per message, so adding a field with a default never
breaks a running history. Every message is a :class:`Message`: its name and its types
together, so a caller and a handler cannot disagree on either (``call_update(handle, ADMIT,
requests)`` on one side, ``@workflow.update(name=ADMIT.name)`` on the other). Workflow code
imports this module: it stays free of side effects.

The words (see docs/design.md): a *scope* has N *slots*, one *coordinator* (the only place
that decides who holds a slot, who waits and in which order) and one *queue*. A *grant* gives a
queued or new run a free slot; the coordinator then starts the run's workflow on the slot's
fixed id. An *attempt* of the run's agent is one execution of the ``run_agent`` activity; each
*dispatch* of it claims the attempt from its run before its agent may start, and holds a
*lease* while it works.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Generic, TypeVar

from agent_runner.ids import ScopeKind

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass(frozen=True)
class Message(Generic[In, Out]):
    """A named message and the types of its argument and answer."""

    name: str
    # Type hints for the data converter (``list[AdmitRequest]``, say).
    arg_type: Any
    result_type: Any


# --- workflow and activity types --------------------------------------------------------------

RUN_WORKFLOW = "AgentRunWorkflow"
SCOPE_WORKFLOW = "AgentScopeWorkflow"
SETTINGS_WORKFLOW = "AgentRunnerSettingsWorkflow"
RUN_AGENT_ACTIVITY = "run_agent"
# The longest progress message an agent can send (a longer one is shortened).
MAX_PROGRESS_MESSAGE = 200


class ErrorType(StrEnum):
    """``ApplicationError.type`` values our workflows and activities raise."""

    INVALID_INPUT = "InvalidInput"
    UNSUPPORTED_AGENT_TYPE = "UnsupportedAgentType"
    AGENT_FAILED = "AgentFailed"
    # The attempt could not be sure it still held its slot, so it stopped without a result.
    LEASE_LOST = "LeaseLost"
    AGENT_TIMED_OUT = "AgentTimedOut"
    # The attempt's claim was refused: its run has moved on (another attempt, or it ended).
    ATTEMPT_REFUSED = "AttemptRefused"
    CANCELLED = "Cancelled"
    # A run workflow started on an id that is not a slot, or not by the slot's coordinator.
    NOT_A_GRANTED_RUN = "NotAGrantedRun"


# --- what a run is ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunPolicy:
    """How a run drives its agent. These defaults are the only place these numbers are
    written: the settings and the agents' own defaults start from here."""

    max_attempts: int = 3
    timeout_seconds: float = 300.0
    heartbeat_timeout_seconds: float = 10.0
    retry_initial_interval_seconds: float = 1.0
    # A run not granted a slot this long after it entered its scope's queue ends ERROR
    # (EXPIRED_IN_QUEUE) and never starts; None: it waits as long as it takes.
    queue_timeout_seconds: float | None = None


class OnBusy(StrEnum):
    REJECT = "reject"
    ENQUEUE = "enqueue"
    # A run of the same agent type, user and params open in the scope (queued or working) is
    # the answer; else the run is enqueued.
    ATTACH = "attach"
    # Cancel the scope's oldest working run and take its slot (once its agent has stopped)
    # before any waiting run.
    REPLACE = "replace"


# Priorities, Temporal's convention: 1 is served first, 3 unless said.
PRIORITY_FIRST = 1
PRIORITY_DEFAULT = 3
PRIORITY_LAST = 5
# Fairness keys and their weights (ScopeLimits.weights).
MAX_FAIRNESS_KEY = 128
# What a fairness key (and an Idempotency-Key, a weight's key) may be: plain text that shows as
# itself wherever it is shown (the Web UI's current details are Markdown).
FAIRNESS_KEY_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"
MAX_WEIGHT = 1000
MAX_WEIGHTS = 1000
# Scopes with limits of their own (the record carries them all).
MAX_SCOPE_OVERRIDES = 1000
# The error of a run whose queue_timeout_seconds passed before it was granted a slot.
EXPIRED_IN_QUEUE = "expired in queue"


@dataclass(frozen=True)
class RunRequest:
    """What to run, for whom."""

    agent_type: str
    user_id: str
    # The agent's parameters (its params_model), as JSON.
    params: dict[str, Any] | None = None
    # None: the deployment's default policy.
    policy: RunPolicy | None = None


class RunState(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"
    ERROR = "ERROR"


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended."""

    state: RunState
    result: Any = None
    error: str | None = None
    attempt: int = 0
    finished_at: datetime | None = None


# --- the coordinator (AgentScopeWorkflow) ---------------------------------------------------------


@dataclass(frozen=True)
class AdmitRequest:
    """One start. ``request_id`` makes a repeated call (a retry) get the first answer; a start
    with an ``idempotency_key`` gets the run the key first made, whatever became of it."""

    request_id: str
    run: RunRequest
    on_busy: OnBusy = OnBusy.REJECT
    idempotency_key: str | None = None
    # SHA-256 of the request's agent type, user and params: a key reused for another request
    # is refused.
    fingerprint: str | None = None
    # The caller gives up waiting for the answer then (its call timed out: it answered 503):
    # a request that reaches the coordinator later is not started behind its back.
    not_after: datetime | None = None
    # While it waits: 1 (first) to 5; FIFO within one priority.
    priority: int = PRIORITY_DEFAULT
    # With fair shares on: whose share it is served from (None: its user's).
    fairness_key: str | None = None
    # Asked again after a lost answer (the API's question): answered as before, or EXPIRED if
    # the coordinator holds no answer for it; never starts a run. Only a question may come past
    # its ``not_after``: any other such admit is refused (ADMIT_EXPIRED), before it is taken in.
    question: bool = False


# The type of the failure that refuses an admit come past its ``not_after``: its coordinator
# took nothing in (an update refused by its validator leaves nothing in the history).
ADMIT_EXPIRED = "AdmitExpired"


class Admission(StrEnum):
    STARTED = "started"  # granted a slot at once
    QUEUED = "queued"
    BUSY = "busy"  # on_busy=reject and no slot free (or runs wait)
    FULL = "full"  # the queue may hold no more
    INVALID = "invalid"
    KEY_REUSED = "key_reused"
    EXPIRED = "expired"  # reached the coordinator after its caller gave up
    ATTACHED = "attached"  # on_busy=attach found the same run open: this is it


@dataclass(frozen=True)
class AdmitAnswer:
    request_id: str
    admission: Admission
    run_id: str | None = None
    # Its place in the queue now, 1 next; None once it holds a slot.
    queue_position: int | None = None
    # An earlier answer, given again (a retry, or the same Idempotency-Key).
    replayed: bool = False
    # Busy: the run that has held a slot longest, and when a slot may free up at the earliest.
    holder_run_id: str | None = None
    holder_granted_at: datetime | None = None
    reason: str | None = None
    # on_busy=replace: the run it cancelled to take its slot.
    replaced_run_id: str | None = None


class RunPhase(StrEnum):
    QUEUED = "queued"  # waiting in the scope's queue
    GRANTED = "granted"  # holds a slot: its workflow starts, or runs there
    ENDED = "ended"


class Waiting(StrEnum):
    """Why a run that is not working waits."""

    QUEUE = "queue"  # its turn
    PREVIOUS_AGENT = "previous_agent"  # the last agent on its slot may still be working
    WORKER = "worker"  # no worker that has its agent has taken it
    PAUSED = "paused"  # its activity was paused from outside (temporal activity pause)


@dataclass(frozen=True)
class RunRecord:
    """The coordinator's word on one run: where it is. Once its workflow runs on a slot, that
    execution says how it goes (attempts, progress, end); the coordinator records its outcome
    when it closes."""

    run_id: str
    agent_type: str
    user_id: str
    phase: RunPhase
    accepted_at: datetime
    # Set when the run waited in the queue.
    queued_at: datetime | None = None
    queue_position: int | None = None
    slot: int | None = None
    granted_at: datetime | None = None
    # The slot's workflow id and the run's execution there, once started.
    workflow_id: str | None = None
    temporal_run_id: str | None = None
    waiting_for: Waiting | None = None
    outcome: RunOutcome | None = None
    idempotency_key: str | None = None
    # Grows with every change of the scope's queue: the stream's event ids while the run waits.
    queue_version: int = 0
    # Cancelled while it held a slot: the cancel was passed on to its workflow.
    cancel_requested: bool = False
    priority: int = PRIORITY_DEFAULT
    fairness_key: str | None = None
    # While it waits: when it expires in the queue (None: never); the runs that hold the
    # scope's slots; how many runs are served before it, by priority (index 0: priority 1);
    # and about when it gets a slot, from the recent durations of the runs ahead of it (None:
    # not known).
    queue_expires_at: datetime | None = None
    slot_holders: list[str] | None = None
    ahead: list[int] | None = None
    eta_seconds: float | None = None
    # Cancelled by an on_busy=replace start: that run's id.
    replaced_by: str | None = None
    # While it waits: its scope is paused (it grants nothing until resumed).
    scope_paused: bool = False


class CancelEffect(StrEnum):
    REMOVED = "removed"  # it waited in the queue: it ended now, never started
    STOPPING = "stopping"  # the cancel was passed on to its workflow; its agent stops
    ALREADY_STOPPING = "already_stopping"  # an earlier cancel did that
    ENDED = "ended"  # it had ended before
    UNKNOWN = "unknown"  # the coordinator does not know it


@dataclass(frozen=True)
class CancelAnswer:
    effect: CancelEffect
    record: RunRecord | None = None


class SlotState(StrEnum):
    FREE = "free"
    HELD = "held"  # by a run of ours
    DRAINING = "draining"  # its last run closed from outside; its agent may still be working
    FOREIGN = "foreign"  # an execution the coordinator did not start holds the id


@dataclass(frozen=True)
class SlotView:
    slot: int
    state: SlotState
    run_id: str | None = None
    temporal_run_id: str | None = None
    free_at: datetime | None = None


@dataclass(frozen=True)
class ScopeLimits:
    """What bounds one scope: N, and how many runs (and bytes of requests) may wait."""

    slots: int = 1
    queue_max: int = 1000
    # A run that has waited this long is served as priority 1, so nothing starves.
    aging_seconds: float = 600.0
    # Whether waiting runs are granted by weighted round-robin over their fairness keys
    # (within one priority) rather than first come, first served.
    fair_shares: bool = False
    # A fairness key's weight (1 unless named here): its share of the grants while it waits.
    weights: dict[str, int] = field(default_factory=dict)
    # A paused scope accepts and queues runs but grants none; its agents at work finish.
    paused: bool = False


@dataclass(frozen=True)
class ScopeOverride:
    """One scope's own limits over the deployment's (None: the deployment's), and its pause."""

    slots: int | None = None
    queue_max: int | None = None
    weights: dict[str, int] | None = None
    paused: bool = False

    def is_empty(self) -> bool:
        return self == ScopeOverride()


@dataclass(frozen=True)
class ViewRequest:
    """A page of the queue: ``limit`` runs from ``offset``."""

    offset: int = 0
    limit: int = 50


@dataclass(frozen=True)
class ScopeView:
    """What holds the slots and what waits, in order (one page of it)."""

    scope_id: str
    limits: ScopeLimits
    slots: list[SlotView]
    queued: list[RunRecord]
    queue_length: int
    queue_version: int


# --- a run on its slot (AgentRunWorkflow) ---------------------------------------------------------


@dataclass(frozen=True)
class SlotRunInput:
    """The input the coordinator starts a run's workflow with. Trusted only from the slot's own
    coordinator (the workflow checks its parent)."""

    run_id: str
    agent_type: str
    user_id: str
    policy: RunPolicy
    params: dict[str, Any] | None = None
    fence_base: int = 0
    idempotency_key: str | None = None
    queued_at: datetime | None = None
    # How long an attempt may wait for a worker that has its agent before it fails.
    worker_wait_seconds: float = 300.0


@dataclass(frozen=True)
class AttemptClaim:
    """A dispatch of an attempt asks its run whether it may start its agent, committing to the
    stop key it will reveal once stopped (see :mod:`agent_runner.lease`)."""

    attempt: int
    commitment: str


@dataclass(frozen=True)
class AttemptGo:
    """May start after ``wait_seconds`` (an earlier dispatch may still be working), holding a
    lease of ``lease_seconds`` per acknowledged heartbeat, writing with ``fencing_token``."""

    wait_seconds: float
    lease_seconds: float
    fencing_token: int


class AttemptEndKind(StrEnum):
    DONE = "done"
    FAILED = "failed"  # another attempt may follow
    FINAL = "final"  # the run ends ERROR (a PermanentError, params the agent refuses)
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class AttemptReport:
    """How a dispatch's attempt ended, told to its run with the dispatch's stop key, before
    the dispatch completes its activity: the run holds a result once the update is accepted, so
    ``agent_complete`` is written only for a result its run has; and an attempt stopped from
    outside (paused, reset) is over for its run even when the server holds its completion."""

    attempt: int
    stop_key: str
    result: Any = None
    kind: AttemptEndKind = AttemptEndKind.DONE
    reason: str = ""
    # Past this the attempt gives up on its report (and says so in its end line): the run
    # refuses the report then, so a report the attempt gave up on is never taken.
    not_after: datetime | None = None


@dataclass(frozen=True)
class AttemptWatch:
    """The answer to a working dispatch's watch: its run was cancelled (stop now), or the
    attempt is no longer the run's current one."""

    cancelled: bool


@dataclass(frozen=True)
class Progress:
    """How far an attempt is, as its agent reported it (a signal to its own run)."""

    attempt: int
    fraction: float
    message: str = ""

    @property
    def valid(self) -> bool:
        """Whether it is one an agent could have sent (the SDK keeps ``fraction`` in 0..1 and
        the message short): anyone can signal a run, so readers drop any other."""
        return 0.0 <= self.fraction <= 1.0 and len(self.message) <= MAX_PROGRESS_MESSAGE


@dataclass(frozen=True)
class AgentTask:
    """The ``run_agent`` activity's input."""

    run_id: str
    agent_type: str
    user_id: str
    attempt: int
    max_attempts: int
    timeout_seconds: float
    heartbeat_timeout_seconds: float
    params: dict[str, Any] | None = None


@dataclass(frozen=True)
class AgentOutput:
    """The ``run_agent`` activity's result: the agent's, and the dispatch's stop key."""

    result: Any
    attempt: int
    stop_key: str = ""


@dataclass(frozen=True)
class FailureDetails:
    """What a failed attempt reports beside its message (``ApplicationError.details[0]``), and
    what a run's own failure carries."""

    attempt: int = 0
    stop_key: str = ""

    @classmethod
    def from_details(cls, details: Any) -> FailureDetails | None:
        """Read them back from decoded failure details; None when they are not ours."""
        first = details[0] if details else None
        if isinstance(first, FailureDetails):
            return first
        if isinstance(first, dict) and isinstance(first.get("attempt"), int):
            key = first.get("stop_key")
            return cls(attempt=first["attempt"], stop_key=key if isinstance(key, str) else "")
        return None


@dataclass(frozen=True)
class AgentRunResult:
    """A run workflow's result (DONE)."""

    agent_type: str
    user_id: str
    result: Any
    attempt: int


# --- what a coordinator asks of the outside world (activities) ---------------------------------


@dataclass(frozen=True)
class SlotSurvey:
    """Look at slots ``0 .. slots-1`` of a scope (a coordinator starting afresh)."""

    scope_id: str
    slots: int
    task_queue: str


@dataclass(frozen=True)
class SlotFinding:
    """What holds one slot's id: nothing (FREE), an open execution (FOREIGN, ``run_id``), or a
    run closed from outside whose agent may work until ``free_at`` (DRAINING)."""

    slot: int
    state: SlotState
    run_id: str | None = None
    free_at: datetime | None = None
    fence_floor: int = 0
    # The open execution's own run id (its memo), when it is one of our runs.
    holder_run_id: str | None = None


@dataclass(frozen=True)
class ExecutionRef:
    workflow_id: str
    run_id: str


@dataclass(frozen=True)
class SlotHolder:
    """Who holds a slot's id that our start found taken: an execution of another type or task
    queue (a squatter: removed), or one of our own kind (it ends by itself)."""

    workflow_id: str
    task_queue: str


@dataclass(frozen=True)
class ExecutionClosed:
    """How an execution on a slot closed: ``clean`` when by its own code (its agent had
    stopped), else its agent may work for ``lease_seconds`` more."""

    clean: bool
    outcome: RunOutcome
    lease_seconds: float


SURVEY_SLOTS = "survey_slots"
ADOPT_PREDECESSOR = "adopt_predecessor"
# The coordinator's query of everything it carries: how a successor takes over a coordinator
# that was terminated (queries replay a closed execution).
CARRY = "carry"
WATCH_EXECUTION = "watch_execution"
REMOVE_SQUATTER = "remove_squatter"
READ_SETTINGS = "read_settings"


# --- the deployment's settings ------------------------------------------------------------------


@dataclass(frozen=True)
class DeploymentSettings:
    """The bound, written once for every replica (AgentRunnerSettingsWorkflow's memo)."""

    scope_kind: ScopeKind = ScopeKind.GLOBAL
    limits: ScopeLimits = field(default_factory=ScopeLimits)
    # Every slot number ever used is below this: a coordinator starting afresh looks at them.
    slots_high_water: int = 1
    version: int = 1
    changed_by: str = ""
    changed_at: datetime | None = None
    # Scopes' own limits and pauses, by the scope's name (``global``, a user id, an agent type).
    scopes: dict[str, ScopeOverride] = field(default_factory=dict)

    def limits_for(self, scope: str) -> ScopeLimits:
        """The limits one scope follows: the deployment's, with the scope's own over them."""
        own = self.scopes.get(scope)
        if own is None:
            return self.limits
        return replace(
            self.limits,
            slots=self.limits.slots if own.slots is None else own.slots,
            queue_max=self.limits.queue_max if own.queue_max is None else own.queue_max,
            weights=self.limits.weights if own.weights is None else own.weights,
            # A deployment-wide pause pauses every scope (a scope's resume cannot undo it).
            paused=own.paused or self.limits.paused,
        )


@dataclass(frozen=True)
class SettingsChange:
    """Change the deployment's limits, or (``scope`` given) one scope's own: ``override``
    replaces them (None or empty: the scope follows the deployment again)."""

    limits: ScopeLimits
    changed_by: str
    scope_kind: ScopeKind = ScopeKind.GLOBAL
    seed: bool = False
    scope: str | None = None
    override: ScopeOverride | None = None
    # The record's version the change was made from: refused (STALE_CHANGE) if it changed
    # since, so two changes made at once from one read never undo each other. None: any.
    based_on: int | None = None
    # Refused (CHANGE_EXPIRED) if it reaches the record later, by the worker's clock: a change
    # whose caller got no answer takes effect by then or never. None: whenever.
    not_after: datetime | None = None


# A change refused because the record changed since it was read (read it again, change again).
STALE_CHANGE = "the settings record changed since this change was made"
# A change refused because it reached the record after its deadline (nothing changed).
CHANGE_EXPIRED = "the change reached the settings record after its deadline"


# --- messages -----------------------------------------------------------------------------------

ADMIT: Message[list[AdmitRequest], list[AdmitAnswer]] = Message(
    "admit", list[AdmitRequest], list[AdmitAnswer]
)
CANCEL: Message[str, CancelAnswer] = Message("cancel", str, CancelAnswer)
RUNS: Message[list[str], list[RunRecord]] = Message("runs", list[str], list[RunRecord])
VIEW: Message[ViewRequest, ScopeView] = Message("view", ViewRequest, ScopeView)
CLAIM_ATTEMPT: Message[AttemptClaim, AttemptGo] = Message("claim_attempt", AttemptClaim, AttemptGo)
WATCH_ATTEMPT: Message[int, AttemptWatch] = Message("watch_attempt", int, AttemptWatch)
REPORT_ATTEMPT: Message[AttemptReport, None] = Message("report_attempt", AttemptReport, type(None))
PROGRESS: Message[Progress, None] = Message("progress", Progress, type(None))
CHANGE_SETTINGS: Message[SettingsChange, DeploymentSettings] = Message(
    "change_settings", SettingsChange, DeploymentSettings
)
# A signal (no argument) to a coordinator: the limits changed, read them before granting again.
# It carries nothing to trust: a forged one only costs a read.
LIMITS_CHANGED = "limits_changed"
# A coordinator reads the settings record again before a decision once what it read is older
# than this: a change of the limits is followed everywhere this long after it was made.
SETTINGS_FRESH = timedelta(seconds=1)
# The memo key the settings workflow publishes its record under (read with one describe).
SETTINGS_MEMO = "settings"
