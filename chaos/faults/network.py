"""Cut a worker off from the server (its proxy stops relaying both ways, sockets left open)
while an agent works on it, then heal: its heartbeats and lease renewals go unanswered, the
server retries the attempt elsewhere, and the cut-off agent must stop on its own."""

from __future__ import annotations

from typing import Any

from chaos.faults.base import index_of
from chaos.faults.processes import WorkerFault
from chaos.stack import ChaosStack


class PartitionWorker(WorkerFault):
    kind = "partition-worker"
    hold_range = (2.0, 20.0)

    async def inject(self, stack: ChaosStack) -> dict[str, Any]:
        stack.proxies[index_of(self.target)].cut()
        return {}

    async def heal(self, stack: ChaosStack) -> dict[str, Any]:
        stack.proxies[index_of(self.target)].heal()
        return {}
