"""``python -m bench.agents_api``: our API (``create_app``), served by uvicorn as
``python -m api`` serves it, that knows the benchmarks' agents (:mod:`bench.agents`) instead of
the installed ones."""

from __future__ import annotations

import uvicorn

from agent_runner.process import exit_now
from agent_runner.settings import Settings
from api.main import create_app
from bench.agents import bench_registry

if __name__ == "__main__":
    settings = Settings()
    app = create_app(settings, bench_registry())
    uvicorn.run(app, host=settings.api_host, port=settings.api_port, log_config=None)
    exit_now(0)
