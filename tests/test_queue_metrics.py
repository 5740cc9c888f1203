"""The queue as Prometheus sees it: slots in use and runs waiting, from a real API."""

from __future__ import annotations

import uuid

import httpx
from temporalio.client import Client

from tests.helpers import USER_ID, app_client, assert_eventually, in_process_worker, make_settings


def gauge(text: str, name: str) -> float:
    [line] = [line for line in text.splitlines() if line.startswith(name + "{")]
    return float(line.rsplit(" ", 1)[1])


async def test_metrics_show_slots_in_use_and_runs_waiting(
    temporal_client: Client, temporal_address: str
) -> None:
    settings = make_settings(
        temporal_address,
        task_queue=f"gauges-{uuid.uuid4()}",
        agent_slots=2,
        agent_duration_seconds=30.0,
    )
    async for api in app_client(settings):
        async with in_process_worker(temporal_client, settings):
            body = {"agent_type": "policy-checker", "user_id": USER_ID, "on_busy": "enqueue"}
            run_ids = [
                (await api.post("/agents/run", json=body)).json()["run_id"] for _ in range(5)
            ]

            async def two_working_three_waiting(api: httpx.AsyncClient = api) -> None:
                text = (await api.get("/metrics")).text
                assert gauge(text, "agent_runner_slots_in_use") == 2
                assert gauge(text, "agent_runner_runs_waiting") == 3
                assert gauge(text, "agent_runner_queues_not_empty") == 1
                assert gauge(text, "agent_runner_slots_per_scope") == 2

            await assert_eventually(two_working_three_waiting, timeout=30, interval=1.0)
            for run_id in reversed(run_ids):
                await api.post(f"/agents/runs/{run_id}/cancel")
