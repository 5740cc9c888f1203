"""The processes of a chaos stack, each life recorded: started when, ended when and how.

The rule: a process's end is read *after* it was seen to be gone (``wait`` returned), so a
span cut short by a SIGKILL is never ended before the agent could have stopped working. Every
start gets a log file of its own, named after the process (``worker0-2.log``), so a line
belongs to exactly one process life.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from agent_runner.settings import Settings
from chaos.history import ProcessLife, ProcessRole, Recorder
from chaos.tail import WorkingAgents
from devtools.processes import ChildProcess


class TrackedProcess:
    """One API or worker slot of the stack (``api0``, ``worker1``), across its restarts."""

    def __init__(
        self,
        role: ProcessRole,
        index: int,
        directory: Path,
        recorder: Recorder,
        launch: Callable[[Settings, Path], ChildProcess],
    ) -> None:
        self.role = role
        self.index = index
        self.directory = directory
        self.recorder = recorder
        self.launch = launch
        self.process: ChildProcess | None = None
        self.life: ProcessLife | None = None
        self.working: WorkingAgents | None = None
        self.paused = False
        self._starts = 0

    @property
    def slot(self) -> str:
        return f"{self.role}{self.index}"

    def running(self) -> bool:
        return self.process is not None and self.process.running()

    def start(self, settings: Settings) -> None:
        if self.running():
            raise RuntimeError(f"{self.slot} is still running")
        self._starts += 1
        name = f"{self.slot}-{self._starts}"
        log = f"{name}.log"
        started = time.time()
        self.process = self.launch(settings, self.directory / log)
        self.paused = False
        self.life = ProcessLife(
            name=name,
            role=self.role,
            index=self.index,
            pid=self.process.pid,
            log=log,
            started=started,
        )
        self.recorder.process_started(self.life)
        self.working = WorkingAgents(name, self.directory / log)

    def agents_working(self) -> list[tuple[str, int | None]]:
        """The agents working on this process now (none unless it runs)."""
        if self.working is None or not self.running():
            return []
        return self.working.now()

    async def kill(self) -> float:
        """SIGKILL; returns when it was seen dead."""
        return await self._end(signal.SIGKILL, "sigkill", timeout=30.0)

    async def stop(self, timeout: float) -> float:
        """SIGTERM (then SIGKILL after ``timeout``); returns when it was seen gone."""
        if self.paused:
            self.resume()
        return await self._end(signal.SIGTERM, "sigterm", timeout=timeout)

    async def _end(
        self, signum: signal.Signals, how: Literal["sigkill", "sigterm"], timeout: float
    ) -> float:
        process = self.process
        if process is None or self.life is None:
            return time.time()
        if process.running():
            process.signal(signum)
            ended_by: Literal["sigkill", "sigterm", "exited"] = how
        else:
            ended_by = "exited"
        try:
            await asyncio.wait_for(asyncio.to_thread(process.process.wait), timeout)
        except TimeoutError:
            process.signal(signal.SIGKILL)
            await asyncio.to_thread(process.process.wait)
            ended_by = "sigkill"
        ended = time.time()
        self.recorder.process_ended(self.life.name, ended, ended_by)
        self.paused = False
        return ended

    def pause(self) -> None:
        if self.process is not None:
            self.process.signal(signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        if self.process is not None:
            self.process.signal(signal.SIGCONT)
            self.paused = False

    def note_exit(self) -> None:
        """Record a process that exited by itself (found dead while healing)."""
        if self.process is not None and self.life is not None and not self.process.running():
            self.recorder.process_ended(self.life.name, time.time(), "exited")
