"""The public API for agent authors.

An agent is a subclass of :class:`Agent`: a ``name``, a pydantic model of its parameters
(``params_model``), optional ``defaults`` for its runs (attempts, timeout, heartbeat timeout),
and ``async def run(self, ctx, params)`` whose JSON-serialisable return value is the run's
result. Ship it in a package of your own and declare it under the entry-point group
``agent_runner.agents``::

    # pyproject.toml of your package
    [project.entry-points."agent_runner.agents"]
    claims-triage = "acme_agents.triage:ClaimsTriage"

Install the package beside agent-runner: workers that have it run it (each agent has a task
queue of its own, so a run waits for a worker that has its agent), and the API validates
``POST /agents/run``'s ``params`` with ``params_model`` and lists the agent at
``GET /agents/types``.

What an agent gets, through its :class:`AgentContext`: the run it works for, a logger bound
to it, a fencing token, ``checkpoint()`` to call before each step that touches the outside world
(it raises :class:`LeaseLostError` once the attempt can no longer be sure it holds its slot),
and ``report_progress()``. Cancellation arrives as ``asyncio.CancelledError``: let it
propagate (clean up in ``finally``). Raise any other exception to fail the attempt; it is
retried up to the run's attempts, unless it is a :class:`PermanentError`.

Agents are created once per process with no arguments (``SomeAgent()``), and may be called for
many runs, one at a time per slot: keep per-run state in ``run``. Settings of your own are best
read from the environment under a prefix of your package's (``ACME_TRIAGE_...``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import structlog
from pydantic import BaseModel, ConfigDict, Field

from agent_runner.lease import MIN_HEARTBEAT_TIMEOUT_SECONDS
from agent_runner.validation import (
    MAX_ATTEMPTS,
    MAX_HEARTBEAT_TIMEOUT_SECONDS,
    MAX_TIMEOUT_SECONDS,
)

ENTRY_POINT_GROUP = "agent_runner.agents"


class NoParams(BaseModel):
    """The parameters of an agent that takes none: an empty object, nothing else."""

    model_config = ConfigDict(extra="forbid")


ParamsT = TypeVar("ParamsT", bound=BaseModel)


class AgentDefaults(BaseModel):
    """What an agent's runs get unless the deployment's settings say otherwise: set only what
    your agent needs (a long timeout for a slow one, say)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int | None = Field(default=None, ge=1, le=MAX_ATTEMPTS)
    timeout_seconds: float | None = Field(default=None, gt=0, le=MAX_TIMEOUT_SECONDS)
    heartbeat_timeout_seconds: float | None = Field(
        default=None, ge=MIN_HEARTBEAT_TIMEOUT_SECONDS, le=MAX_HEARTBEAT_TIMEOUT_SECONDS
    )
    # How long a run may wait in its queue before it ends unstarted ("expired in queue").
    queue_timeout_seconds: float | None = Field(default=None, ge=0.001, le=MAX_TIMEOUT_SECONDS)


class LeaseLostError(Exception):
    """The attempt can no longer be sure it holds its slot; it must not do more work."""


class PermanentError(Exception):
    """Raise it (or a subclass) when another attempt cannot help: a document that does not
    exist, input the outside world refuses. The run ends ERROR with its message at once,
    without the attempts left. Any other exception fails the attempt, and the run retries."""


class AgentContext(Protocol):
    """What an agent gets for one attempt of one run."""

    @property
    def run_id(self) -> str:
        """The run's id, as its client knows it."""

    @property
    def agent_type(self) -> str: ...

    @property
    def user_id(self) -> str: ...

    @property
    def attempt(self) -> int:
        """1 for the first attempt, 2 for the first retry, and so on."""

    @property
    def fencing_token(self) -> int:
        """Grows with every attempt of every run on the agent's slot: pass it with each write
        to the external resource, and have the resource refuse a token lower than the highest
        it has seen. That keeps a stale attempt (a process that was paused past its lease)
        from writing, whatever it does between two checkpoints."""

    @property
    def log(self) -> structlog.stdlib.BoundLogger:
        """A logger whose lines carry ``run_id``, ``agent_type``, ``user_id`` and ``attempt``."""

    def checkpoint(self) -> None:
        """Call before each step that touches the outside world: raises
        :class:`LeaseLostError` once the attempt can no longer be sure it holds its slot."""

    async def report_progress(self, fraction: float, message: str = "") -> None:
        """How far the agent is, 0.0 to 1.0, and what it does now (a short line). Shows in the
        run's status, its event stream and the Temporal Web UI. Cheap: call it as often as
        you like; reports closer together than half a second are merged."""


class Agent(ABC, Generic[ParamsT]):
    """Subclass it, set the class attributes, implement :meth:`run`."""

    #: The ``agent_type`` clients ask for: lowercase letters, digits and dashes.
    name: ClassVar[str]
    #: The parameters ``POST /agents/run`` takes in ``params``; unknown fields are refused.
    params_model: ClassVar[type[BaseModel]] = NoParams
    defaults: ClassVar[AgentDefaults] = AgentDefaults()
    #: One line for ``GET /agents/types``.
    description: ClassVar[str] = ""

    @abstractmethod
    async def run(self, ctx: AgentContext, params: ParamsT) -> Any:
        """Do the work; the return value (JSON-serialisable) is the run's result."""
