"""``python -m bench.agents_worker``: a worker of ours, built as ``worker.py`` builds its own
(``build_workers``, the stuck-run watch), serving the benchmarks' agents (:mod:`bench.agents`)
instead of the installed ones. Until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from datetime import timedelta

from agent_runner.connection import connect, create_runtime
from agent_runner.logs import configure_logging
from agent_runner.process import exit_now
from agent_runner.runs.stuck import watch
from agent_runner.settings import Settings
from bench.agents import bench_registry
from worker import build_workers


async def main(settings: Settings) -> None:
    client = await connect(settings, runtime=create_runtime(settings.worker_metrics_address))
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    stuck_after = timedelta(seconds=settings.run_stuck_after_seconds)
    watching = asyncio.ensure_future(watch(client, settings.run_target(), stuck_after=stuck_after))
    async with build_workers(client, settings, bench_registry()):
        await stop.wait()
    watching.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watching


if __name__ == "__main__":
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(main(settings))
    exit_now(0)
