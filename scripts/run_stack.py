"""``make run``: a Temporal dev server (unless TEMPORAL_ADDRESS is set), a worker and the API.

Ctrl-C (or SIGTERM) stops all three. The dev server keeps its history in DATA_DIR, so runs
survive a restart; its own output goes to DATA_DIR/temporal-server.log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import structlog

from agent_runner.devserver import DevServer, stop_process
from agent_runner.logs import configure_logging
from agent_runner.settings import Settings

logger = structlog.stdlib.get_logger("run_stack")
STARTUP_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 40.0


def start_dev_server(settings: Settings) -> DevServer:
    data_dir = settings.data_dir.resolve()
    server = DevServer(
        db_file=data_dir / "temporal.db",
        port=settings.temporal_dev_port,
        ui_port=settings.temporal_ui_port,
        log_path=data_dir / "temporal-server.log",
    )
    logger.info(
        "temporal_dev_server_starting",
        db_file=str(server.db_file),
        server_log=str(server.log_path),
    )
    server.start(timeout=STARTUP_TIMEOUT_SECONDS)
    return server


def wait_until_serving(url: str, processes: list[subprocess.Popen[bytes]]) -> None:
    """Announce the stack only once the API answers."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if any(process.poll() is not None for process in processes):
            return  # the main loop reports which one exited
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 (our own local URL)
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the API did not answer on {url} in time")


def stop(processes: list[subprocess.Popen[bytes]], server: DevServer | None) -> None:
    """SIGTERM the API and the worker, then the server; SIGKILL what lingers."""
    for process in reversed(processes):
        stop_process(process, timeout=STOP_TIMEOUT_SECONDS)
    if server is not None:
        server.stop(timeout=STOP_TIMEOUT_SECONDS)


def main() -> int:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    processes: list[subprocess.Popen[bytes]] = []
    server: DevServer | None = None
    env = dict(os.environ)
    web_ui = None
    try:
        if settings.uses_external_temporal:
            address = settings.temporal_address
        else:
            server = start_dev_server(settings)
            address = server.address
            web_ui = f"http://localhost:{settings.temporal_ui_port}"
        env["TEMPORAL_ADDRESS"] = address
        root = Path(__file__).resolve().parent.parent
        # The children get their own sessions so Ctrl-C reaches only us; we stop them in order.
        for command in ([sys.executable, "worker.py"], [sys.executable, "-m", "api"]):
            processes.append(subprocess.Popen(command, env=env, cwd=root, start_new_session=True))
        api_host = (
            "localhost" if settings.api_host in ("0.0.0.0", "127.0.0.1") else settings.api_host
        )
        api = f"http://{api_host}:{settings.api_port}"
        wait_until_serving(f"{api}/healthz", processes)
        logger.info(
            "stack_ready",
            message="agent-runner is up; Ctrl-C stops it",
            api_docs=f"{api}/docs",
            api=api,
            temporal_web_ui=web_ui or "see your Temporal cluster's Web UI",
            temporal_address=address,
        )
        watched = [*processes, *([server.process] if server and server.process else [])]
        while not stopping:
            exited = [process for process in watched if process.poll() is not None]
            if exited:
                logger.error(
                    "stack_process_exited",
                    command=str(exited[0].args),
                    returncode=exited[0].returncode,
                )
                return 1
            time.sleep(0.5)
        logger.info("stack_stopping")
        return 0
    except RuntimeError as err:
        logger.error("stack_failed", error=str(err))
        return 1
    finally:
        stop(processes, server)


if __name__ == "__main__":
    sys.exit(main())
