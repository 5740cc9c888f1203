"""The deployment a chaos run attacks, as real processes: a Temporal dev server on a db file in
the run's directory, API processes talking to it directly, and worker processes each talking
to it through a proxy of its own that the nemesis can cut.

The rule: the stack only does what it is told (start, kill, pause, cut, heal) and records each
process's life in the history; it decides nothing. :meth:`ChaosStack.heal` brings everything
back (server up, every process running and resumed, every proxy healed, every extra replica
stopped) and is a no-op on a healthy stack. Extra replicas (an API or a worker started for a
while with other settings) talk to the server directly; an extra API's URL is in
:attr:`ChaosStack.api_urls`, the clients' pool, while it lives.
"""

from __future__ import annotations

import asyncio
import signal
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from agent_runner.settings import Settings
from chaos.history import ProcessLife, ProcessRole, Recorder
from chaos.processes import TrackedProcess
from chaos.proxy import PartitionableProxy
from devtools.processes import ChildProcess, DevServer, free_port

# The dev server suggests continue-as-new after this many events (Temporal's default: 4 Ki), so
# the coordinators do it often during a run, as in tests/test_queue.py.
SERVER_ARGS = ("--dynamic-config-value", "limit.historyCount.suggestContinueAsNew=150")


class ChaosStack:
    def __init__(
        self,
        directory: Path,
        overrides: dict[str, Any],
        recorder: Recorder,
        *,
        apis: int = 2,
        workers: int = 2,
    ) -> None:
        self.directory = directory
        self.overrides = overrides
        self.recorder = recorder
        self.server = DevServer.in_directory(directory, SERVER_ARGS)
        self.server_paused = False
        self._server_starts = 0
        self.api_ports = [free_port() for _ in range(apis)]
        self.apis = [
            TrackedProcess("api", index, directory, recorder, ChildProcess.api)
            for index in range(apis)
        ]
        self.workers = [
            TrackedProcess("worker", index, directory, recorder, ChildProcess.worker)
            for index in range(workers)
        ]
        self.proxies = [PartitionableProxy("127.0.0.1", self.server.port) for _ in range(workers)]
        self.proxy_ports: list[int] = []
        self._client: Client | None = None
        # The APIs the clients draw from (the stack's own, and an extra one while it lives).
        self.api_urls = [self.api_url(index) for index in range(apis)]
        self.extras: dict[str, TrackedProcess] = {}

    def settings(self, **more: Any) -> Settings:
        values = {"temporal_address": self.server.address, **self.overrides, **more}
        return Settings(_env_file=None, **values)

    def api_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.api_ports[index]}"

    async def start(self) -> None:
        self.proxy_ports = [await proxy.start() for proxy in self.proxies]
        await self.start_server()
        for index in range(len(self.apis)):
            await self.start_api(index)
        for index in range(len(self.workers)):
            self.start_worker(index)
        await self.workers_polling()

    # --- the server -------------------------------------------------------------------------

    async def start_server(self) -> None:
        self._server_starts += 1
        started = time.time()
        await asyncio.to_thread(self.server.start)
        assert self.server.process is not None
        self.recorder.process_started(
            ProcessLife(
                name=f"server-{self._server_starts}",
                role="server",
                index=0,
                pid=self.server.process.pid,
                log=self.server.log_path.name,
                started=started,
            )
        )
        self.server_paused = False

    async def stop_server(self, signum: signal.Signals) -> None:
        if self.server_paused:
            self.resume_server()
        await asyncio.to_thread(self.server.stop, signum, 30.0)
        how: Literal["sigkill", "sigterm"] = "sigkill" if signum == signal.SIGKILL else "sigterm"
        self.recorder.process_ended(f"server-{self._server_starts}", time.time(), how)

    def server_running(self) -> bool:
        return self.server.process is not None and self.server.process.poll() is None

    def pause_server(self) -> None:
        assert self.server.process is not None
        self.server.process.send_signal(signal.SIGSTOP)
        self.server_paused = True

    def resume_server(self) -> None:
        if self.server.process is not None:
            self.server.process.send_signal(signal.SIGCONT)
        self.server_paused = False

    async def server_answers(self, timeout: float = 60.0) -> bool:
        """Wait until the server answers a call (a restarted server listens before it serves)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                client = await self.client()
                await asyncio.wait_for(client.count_workflows(), timeout=5.0)
                return True
            except Exception:
                await asyncio.sleep(0.2)
        return False

    async def client(self) -> Client:
        if self._client is None:
            self._client = await Client.connect(self.server.address)
        return self._client

    # --- APIs and workers -------------------------------------------------------------------

    async def start_api(self, index: int, timeout: float = 60.0) -> None:
        self.apis[index].start(self.settings(api_port=self.api_ports[index]))
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2.0) as http:
            while time.monotonic() < deadline and self.apis[index].running():
                try:
                    await http.get(f"{self.api_url(index)}/healthz")
                    return
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
        raise RuntimeError(f"api{index} did not serve in time; see {self.directory}")

    def start_worker(self, index: int) -> None:
        proxied = f"127.0.0.1:{self.proxy_ports[index]}"
        self.workers[index].start(self.settings(temporal_address=proxied))

    async def workers_polling(self, timeout: float = 90.0) -> bool:
        """Wait until every live worker polls the workflow task queue (by its identity
        ``<pid>@<host>``); False if one did not within ``timeout``."""
        task_queue = self.settings().task_queue
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            live = {str(w.process.pid) for w in self.workers if w.process and w.running()}
            try:
                client = await self.client()
                response = await client.workflow_service.describe_task_queue(
                    DescribeTaskQueueRequest(
                        namespace=client.namespace,
                        task_queue=TaskQueue(name=task_queue),
                        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
                    ),
                    timeout=timedelta(seconds=5),
                )
                polling = {poller.identity.partition("@")[0] for poller in response.pollers}
                if live <= polling:
                    return True
            except Exception:  # noqa: S110 (the server may be restarting: ask again)
                pass
            await asyncio.sleep(0.2)
        return False

    # --- extra replicas ---------------------------------------------------------------------

    def start_extra(self, role: ProcessRole, index: int, **settings: Any) -> TrackedProcess:
        """Start an extra API or worker (``api2``...) with these settings, on the server
        directly; the same slot name is the same :class:`TrackedProcess` across strikes."""
        slot = f"{role}{index}"
        if slot not in self.extras:
            launch = ChildProcess.api if role == "api" else ChildProcess.worker
            self.extras[slot] = TrackedProcess(role, index, self.directory, self.recorder, launch)
        extra = self.extras[slot]
        extra.start(self.settings(**settings))
        return extra

    async def stop_extra(self, extra: TrackedProcess, url: str | None = None) -> float:
        if url in self.api_urls:
            self.api_urls.remove(url)
        if not extra.running():
            extra.note_exit()
            return time.time()
        return await extra.stop(timeout=10.0)

    # --- healing and stopping ---------------------------------------------------------------

    async def heal(self) -> None:
        self.api_urls[:] = [self.api_url(index) for index in range(len(self.apis))]
        for extra in self.extras.values():
            await self.stop_extra(extra)
        if self.server_paused:
            self.resume_server()
        if not self.server_running():
            await self.start_server()
        await self.server_answers()
        for proxy in self.proxies:
            proxy.heal()
        for index, api in enumerate(self.apis):
            api.resume()
            if not api.running():
                api.note_exit()
                await self.start_api(index)
        for index, worker in enumerate(self.workers):
            worker.resume()
            if not worker.running():
                worker.note_exit()
                self.start_worker(index)
        await self.workers_polling()

    async def stop(self) -> None:
        """Everything stopped: APIs, then workers (gracefully), then the server and proxies."""
        for extra in self.extras.values():
            await self.stop_extra(extra)
        for api in self.apis:
            await api.stop(timeout=10.0)
        await asyncio.gather(*(worker.stop(timeout=30.0) for worker in self.workers))
        if self.server.process is not None and self.server_running():
            await self.stop_server(signal.SIGTERM)
        for proxy in self.proxies:
            await proxy.close()
