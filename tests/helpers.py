"""Test helpers: settings and apps for a test, waiting with a deadline, in-process workers,
JSON log capture."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from asgi_lifespan import LifespanManager
from temporalio.client import Client

from activities.builtin_agents import builtin_agents
from agent_runner.agent_registry import AgentRegistry
from agent_runner.agents import Agent
from agent_runner.settings import Settings
from api.main import create_app
from devtools.processes import EXAMPLE_USER_ID, ROOT, ChildProcess, wait_until_serving
from worker import Workers, build_workers

__all__ = ["ROOT"]
USER_ID = EXAMPLE_USER_ID
# The task queue of the session's shared worker process.
SHARED_TASK_QUEUE = "tests-shared"
RUN_KEYS = {"timestamp", "level", "event", "agent_type", "user_id", "run_id"}
T = TypeVar("T")


async def post_run(
    api: httpx.AsyncClient,
    agent_type: str = "policy-checker",
    *,
    user_id: str = USER_ID,
    headers: dict[str, str] | None = None,
    base: str = "",
    on_busy: str | None = None,
) -> httpx.Response:
    body = {"agent_type": agent_type, "user_id": user_id}
    if on_busy is not None:
        body["on_busy"] = on_busy
    return await api.post(f"{base}/agents/run", json=body, headers=headers)


async def start_run(
    api: httpx.AsyncClient, agent_type: str = "policy-checker", **options: Any
) -> str:
    """POST a run, insist on 202, return its run id. A 503 is sent again, as the API asks (a
    start answered 503 was not made): a scope whose coordinator must start afresh pays four
    workflow tasks and three activity tasks first, which on a loaded machine (CI, one core
    busy) can outlast the start's budget. Anything else, or a 503 for 60 s, fails."""
    deadline = time.monotonic() + 60.0
    response = await post_run(api, agent_type, **options)
    while response.status_code == 503 and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        response = await post_run(api, agent_type, **options)
    assert response.status_code == 202, response.text
    run_id: str = response.json()["run_id"]
    return run_id


def in_process_worker(
    client: Client,
    settings: Settings,
    agents: Iterable[Agent[Any]] | None = None,
    duration_seconds: float | None = None,
) -> Workers:
    """Real workers in the test process (the main one and one per agent), so tests can serve
    other agents under the real names; the real activity code runs them. Default: the
    built-in agents, working for ``duration_seconds`` (else the settings' duration)."""
    duration = settings.agent_duration_seconds if duration_seconds is None else duration_seconds
    chosen = builtin_agents(duration) if agents is None else agents
    return build_workers(client, settings, AgentRegistry.of(chosen))


@contextlib.asynccontextmanager
async def coordinating_worker(settings: Settings) -> AsyncIterator[Workers]:
    """The workflows' worker alone, serving no agent, on a client of its own (so a test may
    start an :func:`in_process_worker` beside it): starts are decided (each scope's coordinator
    runs here) and runs wait for a worker that has their agent."""
    client = await Client.connect(settings.temporal_address)
    async with build_workers(client, settings, AgentRegistry.of([])) as workers:
        yield workers


async def assert_eventually(
    check: Callable[[], Awaitable[T]], *, timeout: float = 30.0, interval: float = 0.1
) -> T:
    """Poll ``check`` until it returns without AssertionError, or fail with its last error."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(interval)


async def wait_for_state(
    api: httpx.AsyncClient, run_id: str, *states: str, timeout: float = 30.0
) -> dict[str, Any]:
    async def check() -> dict[str, Any]:
        response = await api.get(f"/agents/status/{run_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert body["state"] in states, body
        return body

    return await assert_eventually(check, timeout=timeout)


async def wait_http(url: str, timeout: float = 30.0) -> None:
    """Wait until ``url`` answers at all (any status), without blocking the event loop."""
    await asyncio.to_thread(wait_until_serving, url, timeout=timeout)


def make_settings(temporal_address: str, **overrides: object) -> Settings:
    """Settings for a test: fast agents, short timeouts, and a workflow id of its own, so the
    singleton of one test never sees another's runs."""
    values: dict[str, object] = {
        "temporal_address": temporal_address,
        "task_queue": SHARED_TASK_QUEUE,
        "workflow_id": f"agent-runner-{uuid.uuid4()}",
        "agent_duration_seconds": 0.5,
        "agent_max_attempts": 3,
        "agent_heartbeat_timeout_seconds": 3.0,
        "agent_retry_initial_interval_seconds": 0.1,
        "worker_graceful_shutdown_seconds": 5.0,
        "log_level": "INFO",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


async def app_client(
    settings: Settings, agents: Iterable[Agent[Any]] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """The real FastAPI app, lifespan included, with its own Temporal client; ``agents``: the
    agents it accepts runs of (default: those installed)."""
    app = create_app(settings, None if agents is None else AgentRegistry.of(agents))
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app),
            base_url="http://agent-runner",
            timeout=15.0,
        ) as client,
    ):
        yield client


class JsonLines:
    """Parsed JSON log lines of a file that a process writes its stdout to."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[dict[str, Any]]:
        return [line for line in self._parsed() if line is not None]

    def not_json(self) -> list[str]:
        """Lines that are not JSON objects (there should be none)."""
        lines = self.path.read_text().splitlines() if self.path.exists() else []
        return [line for line, parsed in zip(lines, self._parsed(), strict=True) if parsed is None]

    def _parsed(self) -> list[dict[str, Any] | None]:
        lines = self.path.read_text().splitlines() if self.path.exists() else []
        parsed: list[dict[str, Any] | None] = []
        for line in lines:
            try:
                value = json.loads(line)
            except ValueError:
                value = None
            parsed.append(value if isinstance(value, dict) else None)
        return parsed

    def events(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.read() if line.get("event") == event]


class LoggedProcess(ChildProcess):
    """A process of ours whose JSON log lines the test reads."""

    @property
    def log(self) -> JsonLines:
        assert self.log_path is not None
        return JsonLines(self.log_path)

    @classmethod
    def worker(  # type: ignore[override]
        cls, settings: Settings, log_path: Path | None, *, ready: bool = True, **options: bool
    ) -> LoggedProcess:
        """A worker process; with ``ready``, once it polls (its ``worker_start`` line): a
        start needs a worker to answer (its scope's coordinator is a workflow)."""
        process = super().worker(settings, log_path, **options)
        if ready and log_path is not None:
            process.wait_for_event("worker_start")
        return process

    def wait_for_event(self, event: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.log.events(event):
            if not self.running():
                raise RuntimeError(f"{self.args!r} exited with code {self.process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.args!r} never logged {event}")
            time.sleep(0.05)


class ListHandler(logging.Handler):
    """Collects what the root handler would print, through its very formatter, as dicts."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))

    def events(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == event]
