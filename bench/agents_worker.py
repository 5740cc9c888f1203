"""``python -m bench.agents_worker``: a worker of ours, exactly as ``worker.py`` runs (it joins
the deployment, then serves the coordinator, the runs and the agents), serving the benchmarks'
agents (:mod:`bench.agents`) instead of the installed ones. Until SIGTERM."""

from __future__ import annotations

import asyncio

from agent_runner.logs import configure_logging
from agent_runner.process import exit_now
from agent_runner.settings import Settings
from bench.agents import bench_registry
from worker import main

if __name__ == "__main__":
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(main(settings, bench_registry()))
    exit_now(0)
