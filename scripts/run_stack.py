"""``make run``: a Temporal dev server (unless TEMPORAL_ADDRESS is set), a worker and the API.

Ctrl-C (or SIGTERM) stops all three. The dev server keeps its history in DATA_DIR, so runs
survive a restart; its own output goes to DATA_DIR/temporal-server.log.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable

import structlog

from agent_runner.logs import configure_logging
from agent_runner.settings import Settings
from devtools.processes import ChildProcess, DevServer, stop_in_order, wait_until_serving

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


def supervise(processes: list[subprocess.Popen[bytes]], stopping: Callable[[], bool]) -> int:
    """Until asked to stop (0), or until one of the processes exits on its own (1)."""
    while not stopping():
        exited = [process for process in processes if process.poll() is not None]
        if exited:
            logger.error(
                "stack_process_exited", command=str(exited[0].args), returncode=exited[0].returncode
            )
            return 1
        time.sleep(0.5)
    logger.info("stack_stopping")
    return 0


def main() -> int:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    children: list[ChildProcess] = []
    server: DevServer | None = None
    web_ui = None
    try:
        if not settings.uses_external_temporal:
            server = start_dev_server(settings)
            settings = settings.model_copy(update={"temporal_address": server.address})
            web_ui = f"http://localhost:{settings.temporal_ui_port}"
        # The children log to our stdout, in their own sessions so Ctrl-C reaches only us; we
        # stop them in order.
        for start in (ChildProcess.worker, ChildProcess.api):
            children.append(start(settings, None, own_session=True))
        api_host = (
            "localhost" if settings.api_host in ("0.0.0.0", "127.0.0.1") else settings.api_host
        )
        api = f"http://{api_host}:{settings.api_port}"
        wait_until_serving(
            f"{api}/healthz",
            timeout=STARTUP_TIMEOUT_SECONDS,
            processes=[child.process for child in children],
        )
        logger.info(
            "stack_ready",
            message="agent-runner is up; Ctrl-C stops it",
            api_docs=f"{api}/docs",
            api=api,
            temporal_web_ui=web_ui or "see your Temporal cluster's Web UI",
            temporal_address=settings.temporal_address,
        )
        watched = [child.process for child in children]
        watched += [server.process] if server and server.process else []
        return supervise(watched, lambda: stopping)
    except RuntimeError as err:
        logger.error("stack_failed", error=str(err))
        return 1
    finally:
        stop_in_order(children, server, timeout=STOP_TIMEOUT_SECONDS)


if __name__ == "__main__":
    sys.exit(main())
