"""The processes the benchmarks talk to: one Temporal dev server for the whole run, and named
*stacks* of processes (an API and its worker with settings of their own, the raw worker, the
in-memory app), each started when a scenario needs it and stopped once no later one does."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent_runner.ids import ScopeKind
from agent_runner.settings import Settings
from bench.measure import rss_mib, say
from devtools.processes import ChildProcess, DevServer, free_port, stop_in_order, wait_until_serving

Launch = Callable[[Settings, Path], ChildProcess]


def python_module(module: str) -> Launch:
    return lambda settings, log: ChildProcess([sys.executable, "-m", module], settings, log)


OUR_WORKER: Launch = ChildProcess.worker  # worker.py, the installed agents
OUR_API: Launch = ChildProcess.api  # python -m api
BENCH_WORKER = python_module("bench.agents_worker")  # our worker, the bench agents
BENCH_API = python_module("bench.agents_api")  # our API, the bench agents
RAW_WORKER = python_module("bench.raw_worker")
INMEMORY_APP = python_module("bench.inmemory_app")


@dataclass(frozen=True)
class StackSpec:
    settings: Settings
    # Started in this order, stopped in the reverse one.
    processes: dict[str, Launch]
    # The URL that answers once the stack serves ("" for none: a worker alone).
    ready_path: str = "/readyz"


@dataclass
class Stack:
    spec: StackSpec
    processes: dict[str, ChildProcess] = field(default_factory=dict)

    @property
    def settings(self) -> Settings:
        return self.spec.settings

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.api_port}"


class Services:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        metrics_port = free_port()
        self.server = DevServer.in_directory(
            directory, extra_args=("--metrics-port", str(metrics_port))
        )
        # The server's Prometheus metrics: what its frontend was asked, by operation.
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.stacks: dict[str, Stack] = {}
        # RSS of each process of ours just before it was stopped, in MiB.
        self.memory: dict[str, float] = {}

    def settings(self, name: str, **more: Any) -> Settings:
        """A deployment of its own: task queue, workflow id and API port named after it."""
        values: dict[str, Any] = {
            "temporal_address": self.server.address,
            "task_queue": f"bench-{name}",
            "workflow_id": f"bench-{name}",
            "agent_duration_seconds": 0.0,
            "api_port": free_port(),
            "log_level": "INFO",
        }
        return Settings(_env_file=None, **(values | more))

    def __getitem__(self, name: str) -> Stack:
        return self.stacks[name]

    def start(self, names: Iterable[str]) -> None:
        """Start the stacks not running yet (all at once), then wait until each serves."""
        started = []
        for name in names:
            if name in self.stacks:
                continue
            spec = STACKS[name](self)
            stack = self.stacks[name] = Stack(spec)
            for process, launch in spec.processes.items():
                stack.processes[process] = launch(spec.settings, self.directory / f"{process}.log")
            started.append(stack)
            say(f"  started {name}: {', '.join(spec.processes)}")
        for stack in started:
            if stack.spec.ready_path:
                children = [child.process for child in stack.processes.values()]
                wait_until_serving(
                    stack.url + stack.spec.ready_path, timeout=120, processes=children
                )

    def stop(self, name: str) -> None:
        stack = self.stacks.pop(name)
        for process, child in stack.processes.items():
            if child.running():
                self.memory[process] = rss_mib(child.pid)
        stop_in_order(list(stack.processes.values()), None)
        say(f"  stopped {name}")

    def stop_all(self) -> None:
        for name in reversed(list(self.stacks)):
            self.stop(name)
        self.server.stop()


def _raw(services: Services) -> StackSpec:
    return StackSpec(services.settings("raw"), {"raw-worker": RAW_WORKER}, ready_path="")


def _fast(services: Services) -> StackSpec:
    return StackSpec(services.settings("fast"), {"worker-fast": OUR_WORKER, "api-fast": OUR_API})


def _uncached(services: Services) -> StackSpec:
    """A second API of the "fast" deployment (its worker runs its runs), cache off."""
    fast = services["fast"].settings
    settings = fast.model_copy(update={"api_port": free_port(), "api_status_cache_size": 0})
    return StackSpec(settings, {"api-uncached": OUR_API})


def _slow(services: Services) -> StackSpec:
    settings = services.settings("slow", agent_duration_seconds=600.0)
    return StackSpec(settings, {"worker-slow": OUR_WORKER, "api-slow": OUR_API})


def _inmemory(services: Services) -> StackSpec:
    return StackSpec(services.settings("inmemory"), {"inmemory": INMEMORY_APP}, "/docs")


def _agents(services: Services) -> StackSpec:
    settings = services.settings("agents")
    return StackSpec(settings, {"agents-worker": BENCH_WORKER, "agents-api": BENCH_API})


def _users(services: Services) -> StackSpec:
    """One slot per user. The API waits for Temporal as long as the raw client does: 500
    starts at once keep a dev server on two shared cores busy for longer than the default
    2 s budget (after which the API gives up on a start)."""
    settings = services.settings(
        "users", agent_scope=ScopeKind.USER_ID, temporal_rpc_timeout_seconds=30.0
    )
    return StackSpec(settings, {"users-worker": BENCH_WORKER, "users-api": BENCH_API})


STACKS: dict[str, Callable[[Services], StackSpec]] = {
    "raw": _raw,
    "fast": _fast,
    "uncached": _uncached,
    "slow": _slow,
    "inmemory": _inmemory,
    "agents": _agents,
    "users": _users,
}
