"""Running the real ``agent-runner`` console script against real API processes."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import struct
import sys
import termios
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from agent_runner.settings import Settings
from devtools.processes import free_port
from tests.helpers import LoggedProcess, assert_eventually, make_settings, wait_http

AGENT_RUNNER = Path(sys.executable).parent / "agent-runner"
# Generous: each is a bound for a wedged process, never a measurement.
COMMAND_TIMEOUT = 120.0


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def json_lines(self) -> list[Any]:
        return [json.loads(line) for line in self.out.splitlines()]

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out}--- stderr\n{self.err}"


def cli_env(
    url: str, api_key: str | None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_RUNNER_")}
    env["AGENT_RUNNER_URL"] = url
    if api_key is not None:
        env["AGENT_RUNNER_API_KEY"] = api_key
    return {**env, **(extra or {})}


class CliProcess:
    """One ``agent-runner`` command, running; its stderr read line by line as it comes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.err_lines: list[str] = []
        self._reader = asyncio.create_task(self._read(process.stderr))

    @classmethod
    async def start(
        cls,
        *args: str,
        url: str,
        api_key: str | None = None,
        stderr: int | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CliProcess:
        """``stderr``: a file descriptor to write it to (a terminal) instead of reading it;
        ``env``: more environment variables."""
        process = await asyncio.create_subprocess_exec(
            str(AGENT_RUNNER),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE if stderr is None else stderr,
            env=cli_env(url, api_key, env),
        )
        return cls(process)

    async def _read(self, stream: asyncio.StreamReader | None) -> None:
        while stream is not None and (line := await stream.readline()):
            self.err_lines.append(line.decode())

    async def line(self, matches: Callable[[str], bool], timeout: float = COMMAND_TIMEOUT) -> str:
        """The first stderr line that ``matches``, once it has been written."""
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in self.err_lines if matches(line)]
            if found:
                return found[0]
            if self._reader.done() or time.monotonic() > deadline:
                if not self._reader.done():
                    self.process.kill()  # the reader ends with the process (it waited for ever)
                await self._reader
                raise AssertionError(f"no such line on stderr:\n{''.join(self.err_lines)}")
            await asyncio.sleep(0.05)

    def interrupt(self) -> None:
        self.process.send_signal(signal.SIGINT)

    async def finish(self, timeout: float = COMMAND_TIMEOUT) -> Result:
        assert self.process.stdout is not None
        try:
            out = await asyncio.wait_for(self.process.stdout.read(), timeout)
            code = await asyncio.wait_for(self.process.wait(), timeout)
            await asyncio.wait_for(self._reader, timeout)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            raise AssertionError(
                f"agent-runner did not end in time:\n{''.join(self.err_lines)}"
            ) from None
        return Result(code, out.decode(), "".join(self.err_lines))


async def agent_runner(*args: str, url: str, api_key: str | None = None) -> Result:
    """Run ``agent-runner *args`` to its end."""
    return await (await CliProcess.start(*args, url=url, api_key=api_key)).finish()


@dataclass(frozen=True)
class ApiProcess:
    url: str
    settings: Settings
    process: LoggedProcess


async def _ready(url: str) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{url}/readyz")
    assert response.status_code == 200, response.text


async def start_api(settings: Settings, log_path: Path) -> ApiProcess:
    """A real ``python -m api`` with ``settings``, once it is ready (Temporal connected)."""
    process = LoggedProcess.api(settings, log_path)
    url = f"http://127.0.0.1:{settings.api_port}"
    try:
        await wait_http(f"{url}/healthz", timeout=60)
        await assert_eventually(lambda: _ready(url), timeout=60)
    except BaseException:
        process.stop()
        raise
    return ApiProcess(url, settings, process)


@asynccontextmanager
async def api_process(
    temporal_address: str, log_path: Path, **settings: object
) -> AsyncIterator[ApiProcess]:
    """A real API on a free port, with test settings and ``settings``."""
    chosen = make_settings(temporal_address, api_port=free_port(), **settings)
    api = await start_api(chosen, log_path)
    try:
        yield api
    finally:
        api.process.stop()


class Terminal:
    """A pseudo-terminal (120 columns) to give a command as its stderr: what a person sees."""

    def __init__(self) -> None:
        self._ours, self.fd = os.openpty()
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self._seen = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def close_child_end(self) -> None:
        """Once the command has it: the terminal ends when the command exits."""
        os.close(self.fd)

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._ours, 65536)
            except OSError:  # EIO: every writer has closed it
                chunk = b""
            if not chunk:
                os.close(self._ours)
                return
            self._seen += chunk

    def text(self) -> str:
        return bytes(self._seen).decode(errors="replace")

    async def shows(self, text: str, timeout: float = COMMAND_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.text():
            assert time.monotonic() < deadline, (
                f"the terminal never showed {text!r}:\n{self.text()}"
            )
            await asyncio.sleep(0.05)

    async def rest(self, timeout: float = COMMAND_TIMEOUT) -> str:
        """Everything shown, once the command has closed the terminal."""
        await asyncio.to_thread(self._reader.join, timeout)
        assert not self._reader.is_alive(), "the terminal was not closed"
        return self.text()
