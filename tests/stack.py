"""A whole agent-runner deployment as real processes, for the reliability suite: a Temporal dev
server on a db file, API processes (uvicorn) and worker processes, each started, stopped and
killed by pid."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from agent_runner.settings import Settings
from chaos.proxy import PartitionableProxy
from devtools.processes import DevServer, free_port, stop_in_order
from tests.helpers import LoggedProcess, make_settings, wait_http
from tests.spans import Span, agent_spans


class Stack:
    """One server, ``apis`` API processes and ``workers`` worker processes sharing settings."""

    def __init__(
        self,
        directory: Path,
        settings_for: dict[str, object],
        server_args: Sequence[str] = (),
    ) -> None:
        """``server_args``: more ``temporal server start-dev`` arguments (dynamic config, say),
        kept for every restart of the server."""
        self.directory = directory
        self.server = DevServer.in_directory(directory, server_args)
        self.overrides = settings_for
        self.apis: list[LoggedProcess | None] = []
        self.api_ports: list[int] = []
        self.workers: list[LoggedProcess | None] = []
        # Every worker ever started, and when a worker was killed: for the agents' spans.
        self.every_worker: list[LoggedProcess] = []
        self.killed_at: dict[Path, datetime] = {}
        self._log_counter = 0
        # Each worker talks to the server through a proxy of its own, which a test can cut (a
        # partition: silence both ways) and heal.
        self.proxies: list[PartitionableProxy] = []
        self.proxy_ports: list[int] = []

    def settings(self, **more: object) -> Settings:
        values = {**self.overrides, **more}
        address = str(values.pop("temporal_address", self.server.address))
        return make_settings(address, **values)

    def _log(self, name: str) -> Path:
        self._log_counter += 1
        return self.directory / f"{name}-{self._log_counter}.log"

    def api_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.api_ports[index]}"

    async def start(self, apis: int = 2, workers: int = 2) -> None:
        self.proxies = [PartitionableProxy("127.0.0.1", self.server.port) for _ in range(workers)]
        self.proxy_ports = [await proxy.start() for proxy in self.proxies]
        self.server.start()
        self.api_ports = [free_port() for _ in range(apis)]
        self.apis = [None] * apis
        self.workers = [None] * workers
        for index in range(apis):
            await self.start_api(index)
        for index in range(workers):
            self.start_worker(index)
        await self.workers_polling()

    async def start_api(self, index: int) -> None:
        settings = self.settings(api_port=self.api_ports[index])
        self.apis[index] = LoggedProcess.api(settings, self._log(f"api{index}"))
        await wait_http(f"{self.api_url(index)}/healthz")

    def start_worker(self, index: int, **settings: object) -> LoggedProcess:
        through = {"temporal_address": f"127.0.0.1:{self.proxy_ports[index]}"}
        # Not waited for here: this event loop relays its proxy (see workers_polling).
        worker = LoggedProcess.worker(
            self.settings(**{**through, **settings}), self._log(f"worker{index}"), ready=False
        )
        self.workers[index] = worker
        self.every_worker.append(worker)
        return worker

    def kill_worker(self, index: int) -> None:
        worker = self.workers[index]
        assert worker is not None
        assert worker.log_path is not None
        worker.kill()
        self.killed_at[worker.log_path] = datetime.now(UTC)
        self.workers[index] = None

    def pause_worker(self, index: int) -> None:
        """SIGSTOP: the process stops dead, as in a long GC pause or a frozen VM."""
        worker = self.workers[index]
        assert worker is not None
        worker.signal(signal.SIGSTOP)

    def resume_worker(self, index: int) -> None:
        worker = self.workers[index]
        assert worker is not None
        worker.signal(signal.SIGCONT)

    def cut_worker(self, index: int) -> None:
        """Partition the worker from the server: nothing moves either way until healed."""
        self.proxies[index].cut()

    def heal_worker(self, index: int) -> None:
        self.proxies[index].heal()

    def kill_api(self, index: int) -> None:
        api = self.apis[index]
        assert api is not None
        api.kill()
        self.apis[index] = None

    async def heal(self) -> None:
        """Whatever a test left dead or paused, running again: the server (on its db file),
        every API and every worker. A no-op on a healthy stack."""
        if self.server.process is None or self.server.process.poll() is not None:
            self.server.start()
        for index, api in enumerate(self.apis):
            if api is None or not api.running():
                await self.start_api(index)
        for proxy in self.proxies:
            proxy.heal()
        restarted = False
        for index, worker in enumerate(self.workers):
            if worker is None or not worker.running():
                self.start_worker(index)
                restarted = True
            else:
                worker.signal(signal.SIGCONT)
        if restarted:
            await self.workers_polling()

    async def workers_polling(self, timeout: float = 60.0) -> None:
        """Wait until every live worker polls the task queue for workflow tasks (the server
        lists it among the pollers, by its default identity ``<pid>@<host>``): until then a
        queue's updates, which workflow code answers, may time out."""
        client = await Client.connect(self.server.address)
        task_queue = self.settings().task_queue
        deadline = time.monotonic() + timeout
        while True:
            response = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=client.namespace,
                    task_queue=TaskQueue(name=task_queue),
                    task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
                )
            )
            polling = {poller.identity.partition("@")[0] for poller in response.pollers}
            live = {str(w.pid) for w in self.workers if w is not None and w.running()}
            if live <= polling:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers {sorted(live - polling)} never polled {task_queue}")
            await asyncio.sleep(0.1)

    def spans(self) -> list[Span]:
        """Every agent attempt any worker of this stack logged, as a span of time."""
        return agent_spans(
            [(worker.log_path, worker.log) for worker in self.every_worker if worker.log_path],
            self.killed_at,
        )

    def worker_running(self, run_id: str) -> int | None:
        """Index of the live worker whose log shows the latest attempt of ``run_id`` starting."""
        latest: tuple[int, int] | None = None
        for index, worker in enumerate(self.workers):
            if worker is None or worker.process.poll() is not None:
                continue
            for line in worker.log.events("agent_start"):
                if line.get("run_id") == run_id and (latest is None or line["attempt"] > latest[1]):
                    latest = (index, line["attempt"])
        return None if latest is None else latest[0]

    async def stop_all(self) -> None:
        """Stop every process, last started first, in a thread: the workers' proxies run on this
        event loop, and a worker's graceful shutdown talks to the server through them (waiting
        here with the loop held, each worker waited out its 30 s and was killed)."""
        for proxy in self.proxies:
            proxy.heal()
        await asyncio.to_thread(stop_in_order, [*self.apis, *self.workers], self.server)
        for proxy in self.proxies:
            await proxy.close()
        self.apis = [None] * len(self.apis)
        self.workers = [None] * len(self.workers)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=httpx.Timeout(15.0),
            limits=httpx.Limits(max_connections=500, max_keepalive_connections=500),
        )
