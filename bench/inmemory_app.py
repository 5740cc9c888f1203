"""The seed's design, as a baseline: one process, an asyncio.Lock, a dict of runs.

Same routes and bodies as agent-runner, same uvicorn settings and logging; no durability, no
replicas. Used only by the benchmarks.
"""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from typing import Any

import structlog
import uvicorn
from fastapi import FastAPI, HTTPException, status
from pydantic import BaseModel

from agent_runner.logs import bind_run_context, configure_logging

# Same logging as agent-runner's API: level from LOG_LEVEL, JSON, uvicorn's access log included.
configure_logging(os.environ.get("LOG_LEVEL", "INFO"))
logger = structlog.stdlib.get_logger("inmemory")
app = FastAPI(title="in-memory baseline")
lock = asyncio.Lock()
runs: dict[str, dict[str, Any]] = {}
default_duration = float(os.environ.get("AGENT_DURATION_SECONDS", "0"))


class RunRequest(BaseModel):
    agent_type: str
    user_id: uuid.UUID
    duration_seconds: float | None = None


async def execute(run_id: str, duration: float) -> None:
    try:
        runs[run_id]["state"] = "RUNNING"
        await asyncio.sleep(duration)
        runs[run_id] |= {"state": "DONE", "result": random.choice(["approved", "rejected"])}
    finally:
        lock.release()


@app.post("/agents/run", status_code=status.HTTP_202_ACCEPTED)
async def run_agent(body: RunRequest) -> dict[str, str]:
    if lock.locked():
        raise HTTPException(
            status.HTTP_409_CONFLICT, "An agent is already running, please retry later"
        )
    await lock.acquire()
    run_id = str(uuid.uuid4())
    bind_run_context(agent_type=body.agent_type, user_id=str(body.user_id), run_id=run_id)
    runs[run_id] = {"run_id": run_id, "state": "PENDING", "result": None}
    asyncio.get_running_loop().create_task(
        execute(
            run_id, body.duration_seconds if body.duration_seconds is not None else default_duration
        )
    )
    logger.info("run_accepted")
    return {"run_id": run_id}


@app.get("/agents/status/{run_id}")
async def run_status(run_id: str) -> dict[str, Any]:
    run = runs.get(run_id)
    if run is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No run with this run_id")
    return run


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["API_PORT"]), log_config=None)
