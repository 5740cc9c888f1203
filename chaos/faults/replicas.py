"""Replicas whose environment disagrees with the deployment (issue 18), as in a rolling deploy:
an extra API (in the clients' pool while it lives) or an extra worker started for a while with
``AGENT_SLOTS`` = N + 1 (each must follow the deployment's record, and says so with
``deployment_settings_differ``), and an API and a worker started with another ``AGENT_SCOPE``
(each must refuse to start: exit code 2, ``deployment_mismatch``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from agent_runner.ids import ScopeKind
from chaos.faults.base import Fault
from chaos.processes import TrackedProcess
from chaos.stack import ChaosStack
from devtools.processes import free_port

EXTRA = 2  # the extra replicas' index: api2, worker2
MISMATCHED = 3  # api3, worker3
SERVE_SECONDS = 60.0
MISMATCH_EXIT = 2


def _said_differ(extra: TrackedProcess) -> bool:
    if extra.life is None:
        return False
    log = extra.directory / extra.life.log
    return log.exists() and "deployment_settings_differ" in log.read_text(errors="replace")


class _ReplicaFault(Fault):
    hold_range = (5.0, 20.0)
    _extra: TrackedProcess | None = None
    _url: str | None = None

    @property
    def affects(self) -> list[str]:
        return []

    async def heal(self, stack: ChaosStack) -> dict[str, Any]:
        assert self._extra is not None
        await stack.stop_extra(self._extra, self._url)
        return {"logged_settings_differ": _said_differ(self._extra)}


class OtherSlotsApi(_ReplicaFault):
    kind = "other-slots-api"

    @classmethod
    def targets(cls, stack: ChaosStack) -> list[str]:
        return [f"api{EXTRA}"]

    async def inject(self, stack: ChaosStack) -> dict[str, Any]:
        port = free_port()
        slots = stack.recorder.config.slots + 1
        self._extra = stack.start_extra("api", EXTRA, api_port=port, agent_slots=slots)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + SERVE_SECONDS
        async with httpx.AsyncClient(timeout=2.0) as http:
            while time.monotonic() < deadline and self._extra.running():
                try:
                    await http.get(f"{url}/healthz")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.2)
        self._url = url
        stack.api_urls.append(url)
        return {"agent_slots": slots, "api": len(stack.api_urls) - 1}


class OtherSlotsWorker(_ReplicaFault):
    kind = "other-slots-worker"

    @classmethod
    def targets(cls, stack: ChaosStack) -> list[str]:
        return [f"worker{EXTRA}"]

    async def inject(self, stack: ChaosStack) -> dict[str, Any]:
        slots = stack.recorder.config.slots + 1
        self._extra = stack.start_extra("worker", EXTRA, agent_slots=slots)
        # Held from when it joined: one started while the server is paused joins only once the
        # server answers (a 6 s hold inside a server pause saw it say nothing).
        deadline = time.monotonic() + SERVE_SECONDS
        while time.monotonic() < deadline and self._extra.running():
            if _said_differ(self._extra):
                break
            await asyncio.sleep(0.2)
        return {"agent_slots": slots}


class OtherScopeReplicas(Fault):
    kind = "other-scope-replicas"

    @classmethod
    def targets(cls, stack: ChaosStack) -> list[str]:
        return ["mismatched"]

    @property
    def affects(self) -> list[str]:
        return []

    async def inject(self, stack: ChaosStack) -> dict[str, Any]:
        ours = stack.recorder.config.scope
        other = ScopeKind.AGENT_TYPE if ours == ScopeKind.USER_ID else ScopeKind.USER_ID
        extras = [
            stack.start_extra("api", MISMATCHED, api_port=free_port(), agent_scope=other),
            stack.start_extra("worker", MISMATCHED, agent_scope=other),
        ]
        for _ in range(int(SERVE_SECONDS / 0.2)):
            if not any(extra.running() for extra in extras):
                break
            await asyncio.sleep(0.2)
        codes = {}
        for extra in extras:
            still = extra.running()
            await stack.stop_extra(extra)
            code = extra.process.process.returncode if extra.process else None
            codes[extra.slot] = "still running" if still else code
        if any(code != MISMATCH_EXIT for code in codes.values()):
            raise RuntimeError(f"replicas with AGENT_SCOPE={other.value} did not refuse: {codes}")
        return {"agent_scope": other.value, "exit_codes": codes}
