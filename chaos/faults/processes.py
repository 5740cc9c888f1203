"""Faults of our own processes: SIGKILL a worker or an API (started again later), SIGSTOP one
(SIGCONT later). A worker is hit while an agent works on it when one does within a few
seconds: that is where a kill or a pause tests the bound and exactly-once."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from chaos.faults.base import Fault, index_of
from chaos.processes import TrackedProcess
from chaos.stack import ChaosStack

# How long a worker fault waits for an agent to be working on its worker before striking.
WAIT_FOR_AGENT_SECONDS = 10.0


async def wait_for_agent(worker: TrackedProcess) -> dict[str, Any]:
    """Wait (a while) until an agent works on ``worker``; which one, for the record."""
    deadline = time.monotonic() + WAIT_FOR_AGENT_SECONDS
    while time.monotonic() < deadline:
        working = worker.agents_working()
        if working:
            return {"agent_working": [f"{run_id} attempt {attempt}" for run_id, attempt in working]}
        await asyncio.sleep(0.1)
    return {"agent_working": []}


class WorkerFault(Fault):
    @classmethod
    def targets(cls, stack: ChaosStack) -> list[str]:
        live = [w for w in stack.workers if w.running() and not w.paused]
        busy = [w for w in live if w.agents_working()]
        return [w.slot for w in busy or live]

    async def prepare(self, stack: ChaosStack) -> dict[str, Any]:
        return await wait_for_agent(stack.workers[index_of(self.target)])


class KillWorker(WorkerFault):
    kind = "kill-worker"
    hold_range = (1.0, 10.0)

    async def inject(self, stack: ChaosStack) -> dict[str, Any]:
        worker = stack.workers[index_of(self.target)]
        pid = worker.process.pid if worker.process else None
        return {"pid": pid, "dead_at": await worker.kill()}

    async def heal(self, stack: ChaosStack) -> dict[str, Any]:
        stack.start_worker(index_of(self.target))
        return {"restarted_polling": await stack.workers_polling(timeout=60.0)}


class PauseWorker(WorkerFault):
    kind = "pause-worker"
    hold_range = (2.0, 25.0)

    async def inject(self, stack: ChaosStack) -> dict[str, Any]:
        stack.workers[index_of(self.target)].pause()
        return {}

    async def heal(self, stack: ChaosStack) -> dict[str, Any]:
        stack.workers[index_of(self.target)].resume()
        return {}


class ApiFault(Fault):
    @classmethod
    def targets(cls, stack: ChaosStack) -> list[str]:
        return [api.slot for api in stack.apis if api.running() and not api.paused]


class KillApi(ApiFault):
    kind = "kill-api"
    hold_range = (1.0, 8.0)

    async def inject(self, stack: ChaosStack) -> dict[str, Any]:
        return {"dead_at": await stack.apis[index_of(self.target)].kill()}

    async def heal(self, stack: ChaosStack) -> dict[str, Any]:
        await stack.start_api(index_of(self.target))
        return {}


class PauseApi(ApiFault):
    kind = "pause-api"
    hold_range = (2.0, 25.0)

    async def inject(self, stack: ChaosStack) -> dict[str, Any]:
        stack.apis[index_of(self.target)].pause()
        return {}

    async def heal(self, stack: ChaosStack) -> dict[str, Any]:
        stack.apis[index_of(self.target)].resume()
        return {}
