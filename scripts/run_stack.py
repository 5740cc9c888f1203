"""``make run``: a Temporal dev server (unless TEMPORAL_ADDRESS is set), a worker and the API.

Ctrl-C (or SIGTERM) stops all three. A worker or API that dies is started again (a run in
flight then finishes on the new worker: Temporal retries its attempt); one that keeps dying
right after its start, or the dev server dying, stops everything (exit 1). The dev server keeps
its history in DATA_DIR, so runs survive a restart; its own output goes to
DATA_DIR/temporal-server.log.
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
# A child that exits within QUICK_EXIT_SECONDS of its start QUICK_EXITS times in a row is not
# started again: the stack stops.
QUICK_EXIT_SECONDS = 10.0
QUICK_EXITS = 3
# However slowly it crashes: at most this many restarts of one child in this window.
MAX_RESTARTS = 10
RESTART_WINDOW_SECONDS = 600.0


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


class Restarts:
    """Whether a child that exited may be started again: unless it exited soon after its
    start ``QUICK_EXITS`` times in a row (a crash loop, not an accident), or was restarted
    ``MAX_RESTARTS`` times within ``RESTART_WINDOW_SECONDS`` (a slower crash loop)."""

    def __init__(self, children: list[ChildProcess]) -> None:
        now = time.monotonic()
        self.started = {child: now for child in children}
        self.quick_exits = dict.fromkeys(children, 0)
        self.restarted: dict[ChildProcess, list[float]] = {child: [] for child in children}

    def may_restart(self, child: ChildProcess) -> bool:
        """Count the exit of ``child``; whether to start it again."""
        now = time.monotonic()
        quick = now - self.started[child] < QUICK_EXIT_SECONDS
        self.quick_exits[child] = self.quick_exits[child] + 1 if quick else 0
        recent = [at for at in self.restarted[child] if now - at < RESTART_WINDOW_SECONDS]
        self.restarted[child] = recent
        return self.quick_exits[child] < QUICK_EXITS and len(recent) < MAX_RESTARTS

    def restart(self, child: ChildProcess) -> None:
        child.restart()
        self.started[child] = time.monotonic()
        self.restarted[child].append(self.started[child])


def supervise(
    children: list[ChildProcess],
    server: subprocess.Popen[bytes] | None,
    stopping: Callable[[], bool],
) -> int:
    """Until asked to stop (0), restarting the ``children`` that exit, unless one keeps exiting
    right after its start (1); if the dev server ``server`` exits, at once (1)."""
    restarts = Restarts(children)
    while not stopping():
        if server is not None and server.poll() is not None:
            logger.error(
                "stack_process_exited", command=str(server.args), returncode=server.returncode
            )
            return 1
        for child in children:
            returncode = child.process.poll()
            if returncode is None:
                continue
            if not restarts.may_restart(child):
                logger.error(
                    "stack_process_exited",
                    command=str(child.args),
                    returncode=returncode,
                    message=f"exited {QUICK_EXITS} times within {QUICK_EXIT_SECONDS:g} s of its "
                    "start; stopping the stack",
                )
                return 1
            restarts.restart(child)
            logger.warning(
                "stack_process_restarted",
                command=str(child.args),
                returncode=returncode,
                pid=child.pid,
            )
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
        return supervise(children, server.process if server else None, lambda: stopping)
    except RuntimeError as err:
        logger.error("stack_failed", error=str(err))
        return 1
    finally:
        stop_in_order(children, server, timeout=STOP_TIMEOUT_SECONDS)


if __name__ == "__main__":
    sys.exit(main())
