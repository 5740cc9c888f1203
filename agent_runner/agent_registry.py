"""Finding the installed agents: every entry point of the group ``agent_runner.agents``.

The API and every worker build the same registry from what is installed in their environment:
a worker serves the agents it has; the API validates requests against them. Two agents with
one name, a name that is not a valid agent type, or an entry point that is not an
:class:`~agent_runner.agents.Agent` subclass stop the process at start with a message naming the
packages involved.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import structlog
from pydantic import BaseModel, ValidationError

from agent_runner.agents import ENTRY_POINT_GROUP, Agent
from agent_runner.ids import AGENT_TYPE_PATTERN


class AgentRegistryError(RuntimeError):
    """The installed agents cannot be served as they are."""


class UnknownAgentError(KeyError):
    pass


class InvalidParamsError(ValueError):
    """``params`` do not fit the agent's model; ``errors`` are pydantic's, JSON-safe."""

    def __init__(self, agent_type: str, errors: Sequence[Mapping[str, Any]]) -> None:
        first = errors[0] if errors else {}
        where = ".".join(str(part) for part in ("params", *first.get("loc", ())))
        super().__init__(f"Invalid params for {agent_type}: {where}: {first.get('msg', '')}")
        self.errors = errors


@dataclass(frozen=True)
class Registered:
    agent: Agent[Any]
    source: str  # the distribution and entry point it came from


class AgentRegistry(Mapping[str, Agent[Any]]):
    def __init__(self, agents: Mapping[str, Registered]) -> None:
        self._agents = dict(agents)

    @classmethod
    def of(cls, agents: Iterable[Agent[Any]], source: str = "given") -> AgentRegistry:
        """A registry of these agents (tests, and workers that serve a chosen few)."""
        found: dict[str, Registered] = {}
        for agent in agents:
            _add(found, agent, source)
        return cls(found)

    @classmethod
    def installed_or_exit(cls, only: str = "") -> AgentRegistry:
        """:meth:`installed` (``only`` those named in a comma-separated list, if given), or a
        logged error and exit status 1 (a process that cannot serve its agents as installed and
        asked must not start)."""
        try:
            return cls.installed().only(only)
        except AgentRegistryError as err:
            structlog.stdlib.get_logger(__name__).error(
                "agent_registry_invalid", message=str(err), group=ENTRY_POINT_GROUP
            )
            raise SystemExit(1) from None

    @classmethod
    def installed(cls, points: Iterable[EntryPoint] | None = None) -> AgentRegistry:
        """Every agent declared under the entry-point group in this environment."""
        found: dict[str, Registered] = {}
        for point in points if points is not None else entry_points(group=ENTRY_POINT_GROUP):
            source = _source(point)
            try:
                loaded = point.load()
            except Exception as err:
                raise AgentRegistryError(f"cannot load agent {source}: {err}") from err
            if not (isinstance(loaded, type) and issubclass(loaded, Agent)):
                raise AgentRegistryError(f"{source} is not an agent_runner.agents.Agent subclass")
            _add(found, loaded(), source)
        return cls(found)

    def only(self, names: str) -> AgentRegistry:
        """These agents (comma-separated names; empty: all of them)."""
        wanted = [name.strip() for name in names.split(",") if name.strip()]
        if not wanted:
            return self
        missing = sorted(set(wanted) - set(self._agents))
        if missing:
            raise AgentRegistryError(
                f"WORKER_AGENTS names agents that are not installed: {', '.join(missing)} "
                f"(installed: {', '.join(self) or 'none'})"
            )
        return AgentRegistry({name: self._agents[name] for name in wanted})

    def __getitem__(self, name: str) -> Agent[Any]:
        try:
            return self._agents[name].agent
        except KeyError:
            raise UnknownAgentError(name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._agents))

    def __len__(self) -> int:
        return len(self._agents)

    def source(self, name: str) -> str:
        return self._agents[name].source

    def params(self, name: str, raw: object) -> BaseModel:
        """Validate ``raw`` (a dict, or None for none) against the agent's parameters model."""
        model = self[name].params_model
        try:
            return model.model_validate({} if raw is None else raw)
        except ValidationError as err:
            raise InvalidParamsError(
                name, err.errors(include_url=False, include_input=False)
            ) from None


def _add(found: dict[str, Registered], agent: Agent[Any], source: str) -> None:
    name = getattr(agent, "name", None)
    if not isinstance(name, str) or not re.match(AGENT_TYPE_PATTERN, name):
        raise AgentRegistryError(
            f"agent {source} has name {name!r}: a name is lowercase letters, digits and dashes"
        )
    if name in found:
        raise AgentRegistryError(
            f"two agents are named {name!r}: {found[name].source} and {source}; "
            "uninstall one or rename it"
        )
    found[name] = Registered(agent, source)


def _source(point: EntryPoint) -> str:
    dist = point.dist
    package = f"{dist.name} {dist.version}" if dist is not None else "an unknown package"
    return f"{point.name} = {point.value} ({package})"
