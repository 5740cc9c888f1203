"""Where runs live: scopes, the workflow ids of a scope's coordinator and slots, and run ids.

A *scope* is one independent set of N slots with one queue: the whole deployment
(``AGENT_SCOPE=global``), one per user (``user_id``) or one per agent type (``agent_type``).
Its coordinator is the workflow whose id is the scope's id; slot ``k`` is the fixed workflow
id ``<scope id>:slot-<k>``, and the server's uniqueness of that id is what allows at most one
run on it at a time::

    agent-runner                       the global scope's coordinator
    agent-runner:slot-0                its slot 0
    agent-runner:user:<uuid>           a user's scope (AGENT_SCOPE=user_id)
    agent-runner:user:<uuid>:slot-1
    agent-runner:type:<agent type>     an agent type's scope (AGENT_SCOPE=agent_type)
    agent-runner:settings              the deployment's settings record

A run id is a UUID, followed for a scope other than the global one by ``~`` and the scope's
code (``u`` and the user id's 32 hex digits, or ``t`` and the agent type). It is canonical:
:func:`parse_run_id` takes only the exact text it gives out, so one run has one id.

Pure functions of their arguments: workflow code uses them too.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

# What the base workflow id may contain: it is the prefix of every id below.
WORKFLOW_ID_PATTERN = r"^[A-Za-z0-9._\-]{1,100}$"
# Agent type names: they appear in workflow ids and run ids of the agent_type scope.
AGENT_TYPE_PATTERN = r"^[a-z][a-z0-9-]{0,62}$"
# Slot numbers are below this, whatever N is (the settings refuse more).
MAX_SLOTS = 100
# The largest queue a scope may be given (AGENT_QUEUE_MAX, PUT /agents/limits).
MAX_QUEUE = 100_000
# The longest name of a scope (an agent type's is the longest: 63 characters).
MAX_SCOPE_NAME = 100
_SEP = ":"
_SLOT = "slot-"
_SETTINGS = "settings"
_KINDS = {"user": "user_id", "type": "agent_type"}
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_USER_CODE = re.compile(r"^u(?P<hex>[0-9a-f]{32})$")
_TYPE_CODE = re.compile(r"^t(?P<name>[a-z][a-z0-9-]{0,62})$")
_AGENT_TYPE = re.compile(AGENT_TYPE_PATTERN)


class ScopeKind(StrEnum):
    GLOBAL = "global"
    USER_ID = "user_id"
    AGENT_TYPE = "agent_type"


_ID_PARTS = {ScopeKind.USER_ID: "user", ScopeKind.AGENT_TYPE: "type"}


@dataclass(frozen=True)
class Scope:
    """One set of slots and one queue, kept by one coordinator."""

    base: str
    kind: ScopeKind = ScopeKind.GLOBAL
    key: str | None = None

    @property
    def id(self) -> str:
        """The scope's id: its coordinator's workflow id, the prefix of its slots' ids."""
        if self.kind == ScopeKind.GLOBAL:
            return self.base
        return _SEP.join((self.base, _ID_PARTS[self.kind], str(self.key)))

    def slot_id(self, slot: int) -> str:
        return f"{self.id}{_SEP}{_SLOT}{slot}"

    @property
    def code(self) -> str:
        """The scope's part of a run id: empty for the global scope."""
        if self.kind == ScopeKind.USER_ID:
            return f"u{uuid.UUID(str(self.key)).hex}"
        if self.kind == ScopeKind.AGENT_TYPE:
            return f"t{self.key}"
        return ""

    @property
    def label(self) -> str:
        """How people name the scope: ``global``, a user id or an agent type."""
        return "global" if self.kind == ScopeKind.GLOBAL else str(self.key)


def scope_for(base: str, kind: ScopeKind, *, agent_type: str, user_id: str) -> Scope:
    """The scope a run for ``agent_type`` and ``user_id`` belongs to."""
    if kind == ScopeKind.USER_ID:
        return Scope(base, kind, str(uuid.UUID(user_id)))
    if kind == ScopeKind.AGENT_TYPE:
        return Scope(base, kind, agent_type)
    return Scope(base)


def scope_named(base: str, kind: ScopeKind, label: str) -> Scope | None:
    """The scope people call ``label`` (see :attr:`Scope.label`); None when it is not one."""
    if kind == ScopeKind.GLOBAL:
        return Scope(base) if label == "global" else None
    if kind == ScopeKind.USER_ID:
        return Scope(base, kind, label) if _UUID.fullmatch(label) else None
    return Scope(base, kind, label) if _AGENT_TYPE.fullmatch(label) else None


def settings_id(base: str) -> str:
    """The workflow id of the deployment's settings record."""
    return f"{base}{_SEP}{_SETTINGS}"


@dataclass(frozen=True)
class WorkflowPlace:
    """What one of our workflow ids is: a scope's coordinator (``slot`` None) or one of its
    slots."""

    scope: Scope
    slot: int | None


def parse_workflow_id(base: str, workflow_id: str) -> WorkflowPlace | None:
    """What ``workflow_id`` is in the deployment whose base id is ``base``; None if it is not
    one of its coordinator or slot ids (the settings id included)."""
    if workflow_id == base:
        return WorkflowPlace(Scope(base), None)
    if not workflow_id.startswith(base + _SEP):
        return None
    parts = workflow_id[len(base) + 1 :].split(_SEP)
    scope = Scope(base)
    if parts[0] in _KINDS and len(parts) >= 2:
        kind = ScopeKind(_KINDS[parts[0]])
        found = scope_named(base, kind, parts[1])
        if found is None:
            return None
        scope, parts = found, parts[2:]
    if not parts:
        return WorkflowPlace(scope, None) if scope.kind != ScopeKind.GLOBAL else None
    if len(parts) == 1 and parts[0].startswith(_SLOT):
        number = parts[0].removeprefix(_SLOT)
        if number.isascii() and number.isdigit() and str(int(number)) == number:
            slot = int(number)
            return WorkflowPlace(scope, slot) if slot < MAX_SLOTS else None
    return None


@dataclass(frozen=True)
class RunRef:
    """A run: its scope and its UUID."""

    scope: Scope
    uuid: str

    @property
    def run_id(self) -> str:
        code = self.scope.code
        return f"{self.uuid}~{code}" if code else self.uuid


def parse_run_id(base: str, run_id: str) -> RunRef | None:
    """The run this id names; None for any text that is not exactly an id this deployment
    gives out (another spelling of a real id included)."""
    core, tilde, code = run_id.partition("~")
    if not _UUID.fullmatch(core) or (tilde and not code):
        return None
    scope: Scope | None = Scope(base)
    if code:
        scope = _scope_from_code(base, code)
    if scope is None:
        return None
    ref = RunRef(scope, core)
    return ref if ref.run_id == run_id else None


def _scope_from_code(base: str, code: str) -> Scope | None:
    if match := _USER_CODE.fullmatch(code):
        return Scope(base, ScopeKind.USER_ID, str(uuid.UUID(hex=match["hex"])))
    if match := _TYPE_CODE.fullmatch(code):
        return Scope(base, ScopeKind.AGENT_TYPE, match["name"])
    return None


def agent_task_queue(task_queue: str, agent_type: str) -> str:
    """The task queue of one agent's activities: only workers that have the agent poll it, so a
    run waits for such a worker instead of failing on one that lacks the agent."""
    return f"{task_queue}.agents.{agent_type}"


def place_of(workflow_id: str) -> WorkflowPlace | None:
    """:func:`parse_workflow_id` with the base read off the id itself (its part before the
    first ``:``; a base never contains one): for workflow code, which cannot read settings."""
    base = workflow_id.split(_SEP, 1)[0]
    if not re.fullmatch(WORKFLOW_ID_PATTERN, base):
        return None
    return parse_workflow_id(base, workflow_id)


@dataclass(frozen=True)
class RunTarget:
    """Where a deployment's runs live: its base workflow id, its workers' task queue, what a
    scope is (from the deployment's record), and how long one call to Temporal may take."""

    workflow_id: str
    task_queue: str
    rpc_timeout: timedelta
    scope_kind: ScopeKind = ScopeKind.GLOBAL

    def scope(self, *, agent_type: str, user_id: str) -> Scope:
        return scope_for(self.workflow_id, self.scope_kind, agent_type=agent_type, user_id=user_id)
