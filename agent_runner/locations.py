"""Where runs live: the workflow ids of a scope's slots and of its queue, and run ids that say
where their run is, so any replica finds a run with one strongly consistent read.

A *scope* is one independent set of N slots and one queue: the whole deployment
(``AGENT_SCOPE=global``), one per user (``user_id``) or one per agent type (``agent_type``).
Slot ``k`` of a scope is one fixed workflow id; the server's uniqueness of that id is what
allows at most N runs at once. The global scope's slot 0 is ``WORKFLOW_ID`` itself, as it
always was, so one-slot deployments and the ``temporal`` CLI see the ids they know.

Run ids are opaque to clients. Inside, a run that started at once is its slot execution's
Temporal run id, followed by ``~`` and its location unless it is the global scope's slot 0; a
run that waited in a queue is ``<queue execution's run id>.<number>~q<scope>``.

Pure functions of their arguments: workflow code uses them too.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from enum import StrEnum

# What the base workflow id may contain: it is the prefix of every id below.
WORKFLOW_ID_PATTERN = r"^[A-Za-z0-9._\-]{1,100}$"
# Agent type names: they appear in workflow ids and run ids of the agent_type scope.
AGENT_TYPE_PATTERN = r"^[a-z][a-z0-9-]{0,62}$"
_QUEUE = "queue"
_SLOT_PREFIX = "slot-"
_SEPARATOR = ":"
_RUN_ID = re.compile(r"^[0-9a-f-]{36}$")
_QUEUED_RUN_ID = re.compile(r"^(?P<queue_run>[0-9a-f-]{36})\.(?P<number>[0-9]{1,9})$")
_USER_CODE = re.compile(r"^u(?P<hex>[0-9a-f]{32})$")
_TYPE_CODE = re.compile(r"^t(?P<name>[a-z][a-z0-9-]{0,62})$")


class ScopeKind(StrEnum):
    GLOBAL = "global"
    USER_ID = "user_id"
    AGENT_TYPE = "agent_type"


_ID_PARTS = {ScopeKind.USER_ID: "user", ScopeKind.AGENT_TYPE: "type"}


@dataclass(frozen=True)
class Scope:
    """One set of slots and one queue."""

    base: str
    kind: ScopeKind = ScopeKind.GLOBAL
    key: str | None = None

    @property
    def id(self) -> str:
        if self.kind == ScopeKind.GLOBAL:
            return self.base
        return _SEPARATOR.join((self.base, _ID_PARTS[self.kind], str(self.key)))

    @property
    def queue_id(self) -> str:
        return f"{self.id}{_SEPARATOR}{_QUEUE}"

    def slot_id(self, slot: int) -> str:
        return self.id if slot == 0 else f"{self.id}{_SEPARATOR}{_SLOT_PREFIX}{slot}"

    @property
    def code(self) -> str:
        """The scope's part of a run id: empty for the global scope."""
        if self.kind == ScopeKind.USER_ID:
            return f"u{uuid.UUID(str(self.key)).hex}"
        if self.kind == ScopeKind.AGENT_TYPE:
            return f"t{self.key}"
        return ""


def scope_for(base: str, kind: ScopeKind, *, agent_type: str, user_id: str) -> Scope:
    """The scope a run for ``agent_type`` and ``user_id`` belongs to."""
    if kind == ScopeKind.USER_ID:
        return Scope(base, kind, str(uuid.UUID(user_id)))
    if kind == ScopeKind.AGENT_TYPE:
        return Scope(base, kind, agent_type)
    return Scope(base)


@dataclass(frozen=True)
class SlotRun:
    """A run that holds (or held) a slot: its slot execution."""

    scope: Scope
    slot: int
    temporal_run_id: str

    @property
    def workflow_id(self) -> str:
        return self.scope.slot_id(self.slot)

    @property
    def location(self) -> str:
        """The run id's part after ``~``: empty for the global scope's slot 0."""
        return self.scope.code + (f"_{self.slot}" if self.slot else "")

    @property
    def run_id(self) -> str:
        return client_run_id(self.temporal_run_id, self.location)


@dataclass(frozen=True)
class QueuedRun:
    """A run accepted into a queue: the queue execution that accepted it and its number there."""

    scope: Scope
    queue_run_id: str
    number: int

    @property
    def workflow_id(self) -> str:
        return self.scope.queue_id

    @property
    def run_id(self) -> str:
        return f"{self.queue_run_id}.{self.number}~q{self.scope.code}"


RunRef = SlotRun | QueuedRun


def client_run_id(temporal_run_id: str, location: str) -> str:
    """The run id clients know for a run that holds a slot at ``location`` (see
    :attr:`SlotRun.location`)."""
    return f"{temporal_run_id}~{location}" if location else temporal_run_id


def parse_run_id(base: str, run_id: str) -> RunRef | None:
    """Where the run with this id lives; None for an id this service never gave out."""
    core, _, location = run_id.partition("~")
    queued = location.startswith("q")
    scope_code, _, slot_text = location.removeprefix("q").partition("_")
    scope = _scope_from_code(base, scope_code)
    if scope is None:
        return None
    if queued:
        match = _QUEUED_RUN_ID.match(core)
        if match is None or slot_text:
            return None
        return QueuedRun(scope, match["queue_run"], int(match["number"]))
    if not _RUN_ID.match(core) or (slot_text and not slot_text.isdigit()):
        return None
    slot = int(slot_text) if slot_text else 0
    if slot_text and slot == 0:
        return None  # slot 0 is written without a suffix: one id per run
    return SlotRun(scope, slot, core)


def parse_workflow_id(base: str, workflow_id: str) -> tuple[Scope, int | None] | None:
    """The scope and slot (None for the queue) of one of our workflow ids; None if not ours."""
    if workflow_id == base:
        return Scope(base), 0
    if not workflow_id.startswith(base + _SEPARATOR):
        return None
    parts = workflow_id[len(base) + 1 :].split(_SEPARATOR)
    scope = Scope(base)
    if parts[0] in ("user", "type") and len(parts) >= 2:
        kind = ScopeKind.USER_ID if parts[0] == "user" else ScopeKind.AGENT_TYPE
        scope = Scope(base, kind, parts[1])
        if scope.id != _SEPARATOR.join((base, *parts[:2])):
            return None
        parts = parts[2:]
    if not parts:
        return scope, 0
    if parts == [_QUEUE]:
        return scope, None
    if len(parts) == 1 and parts[0].startswith(_SLOT_PREFIX):
        number = parts[0].removeprefix(_SLOT_PREFIX)
        if number.isdigit() and int(number) > 0 and str(int(number)) == number:
            return scope, int(number)
    return None


def agent_task_queue(task_queue: str, agent_type: str) -> str:
    """The task queue of one agent's activities: only workers that have the agent poll it, so a
    run waits for such a worker instead of failing on one that lacks the agent."""
    return f"{task_queue}.agents.{agent_type}"


def slot_of(workflow_id: str) -> int:
    """The slot number of a slot's workflow id (0 unless it ends in ``:slot-N``)."""
    _, separator, last = workflow_id.rpartition(_SEPARATOR)
    number = last.removeprefix(_SLOT_PREFIX)
    if separator and last.startswith(_SLOT_PREFIX) and number.isdigit():
        return int(number)
    return 0


def queue_id_of(slot_workflow_id: str) -> str:
    """The queue of the scope a slot's workflow id belongs to."""
    scope_id = slot_workflow_id
    if slot_of(slot_workflow_id):
        scope_id = slot_workflow_id.rpartition(_SEPARATOR)[0]
    return f"{scope_id}{_SEPARATOR}{_QUEUE}"


def _scope_from_code(base: str, code: str) -> Scope | None:
    if not code:
        return Scope(base)
    if match := _USER_CODE.match(code):
        return Scope(base, ScopeKind.USER_ID, str(uuid.UUID(hex=match["hex"])))
    if match := _TYPE_CODE.match(code):
        return Scope(base, ScopeKind.AGENT_TYPE, match["name"])
    return None
