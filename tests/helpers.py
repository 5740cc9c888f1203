"""Test helpers: waiting with a deadline, real worker processes, JSON log capture."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import SecretStr
from temporalio.client import Client
from temporalio.worker import Worker

from activities import AGENTS, Agent, AgentActivities
from agent_runner.devserver import stop_process
from agent_runner.settings import Settings
from workflows import AgentRunWorkflow

ROOT = Path(__file__).resolve().parent.parent
USER_ID = "9b64a3a7-f8e4-4f06-8e57-73b50b042f29"
RUN_KEYS = {"timestamp", "level", "event", "agent_type", "user_id", "run_id"}
T = TypeVar("T")


async def post_run(
    api: httpx.AsyncClient,
    agent_type: str = "policy-checker",
    *,
    user_id: str = USER_ID,
    headers: dict[str, str] | None = None,
    base: str = "",
) -> httpx.Response:
    return await api.post(
        f"{base}/agents/run", json={"agent_type": agent_type, "user_id": user_id}, headers=headers
    )


async def start_run(
    api: httpx.AsyncClient, agent_type: str = "policy-checker", **options: Any
) -> str:
    """POST a run, insist on 202, return its run id."""
    response = await post_run(api, agent_type, **options)
    assert response.status_code == 202, response.text
    run_id: str = response.json()["run_id"]
    return run_id


def in_process_worker(
    client: Client,
    settings: Settings,
    agents: Mapping[str, Agent] = AGENTS,
    duration_seconds: float | None = None,
) -> Worker:
    """A real worker in the test process, so tests can register other agents under the real
    names; the real activity code runs them."""
    duration = settings.agent_duration_seconds if duration_seconds is None else duration_seconds
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[AgentRunWorkflow],
        activities=[AgentActivities(agents, duration).run_agent],
    )


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
    """Wait until ``url`` answers at all (any status)."""

    async def answers() -> None:
        async with httpx.AsyncClient(timeout=2.0) as http:
            try:
                await http.get(url)
            except httpx.TransportError as err:
                raise AssertionError(f"{url}: {err}") from err

    await assert_eventually(answers, timeout=timeout, interval=0.2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process see ``settings``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AGENT_")}
    for name, value in settings.model_dump(exclude_none=True).items():
        env[name.upper()] = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
    return env


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


class ChildProcess:
    """A real process of ours (worker or API) with its stdout in a file."""

    def __init__(self, args: list[str], settings: Settings, log_path: Path) -> None:
        self.log = JsonLines(log_path)
        with log_path.open("ab") as out:
            self.process = subprocess.Popen(
                args, cwd=ROOT, env=settings_env(settings), stdout=out, stderr=out
            )

    @classmethod
    def worker(cls, settings: Settings, log_path: Path) -> ChildProcess:
        return cls([sys.executable, "worker.py"], settings, log_path)

    @classmethod
    def api(cls, settings: Settings, log_path: Path) -> ChildProcess:
        """``python -m api`` (uvicorn) on ``settings.api_port``; wait with :func:`wait_http`."""
        return cls([sys.executable, "-m", "api"], settings, log_path)

    @property
    def pid(self) -> int:
        return self.process.pid

    def signal(self, signum: signal.Signals) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signum)

    def stop(self, timeout: float = 30.0) -> int:
        return stop_process(self.process, timeout=timeout)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.process.wait()


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
