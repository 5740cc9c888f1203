"""The REST contract end to end: real server, real worker process, real app."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from agent_runner.deployment import join_deployment
from agent_runner.runs import AgentBusyError, start_agent_run
from agent_runner.settings import Settings
from tests.helpers import (
    RUN_KEYS,
    USER_ID,
    LoggedProcess,
    app_client,
    assert_eventually,
    make_settings,
    start_run,
    wait_for_state,
)

BUSY = {"detail": "An agent is already running, please retry later"}


@pytest.mark.usefixtures("shared_worker")
async def test_policy_checker_reaches_done_with_a_decision(api: httpx.AsyncClient) -> None:
    run_id = await start_run(api, "policy-checker")

    body = await wait_for_state(api, run_id, "DONE")

    assert body["result"] in ("approved", "rejected")
    assert body["agent_type"] == "policy-checker"
    assert body["user_id"] == USER_ID
    assert body["run_id"] == run_id
    assert body["error"] is None
    assert body["attempt"] == 1
    assert body["started_at"] is not None
    assert body["finished_at"] is not None


@pytest.mark.usefixtures("shared_worker")
async def test_document_extractor_reaches_done_with_extracted_fields(
    api: httpx.AsyncClient,
) -> None:
    run_id = await start_run(api, "document-extractor")

    body = await wait_for_state(api, run_id, "DONE")

    assert body["result"]["fields"]["policy_holder"] == USER_ID
    assert body["result"]["pages"] > 0


async def test_no_worker_is_a_503_naming_the_task_queue_then_runs_once_one_polls(
    temporal_address: str, worker_log: Path
) -> None:
    """A start is decided by its scope's coordinator, a workflow: with no worker polling the
    deployment's task queue nothing can decide, and the API says so instead of a bare 503."""
    settings = make_settings(temporal_address, task_queue=f"no-worker-{uuid.uuid4()}")
    async for api in app_client(settings):
        response = await api.post(
            "/agents/run", json={"agent_type": "policy-checker", "user_id": USER_ID}
        )
        assert response.status_code == 503
        assert settings.task_queue in response.json()["detail"]
        assert response.headers["Retry-After"]

        worker = LoggedProcess.worker(settings, worker_log)
        try:
            run_id = await start_run(api)
            body = await wait_for_state(api, run_id, "DONE")
        finally:
            worker.stop()
        assert body["attempt"] == 1


@pytest.mark.usefixtures("shared_worker")
async def test_busy_is_409_with_the_exact_detail_then_202_after_the_run(
    temporal_address: str,
) -> None:
    settings = make_settings(temporal_address, agent_duration_seconds=2.0)
    async for api in app_client(settings):
        run_id = await start_run(api)
        await wait_for_state(api, run_id, "PENDING", "RUNNING")

        busy = await api.post(
            "/agents/run", json={"agent_type": "document-extractor", "user_id": USER_ID}
        )
        assert busy.status_code == 409
        assert busy.json() == {**BUSY, "running_run_id": run_id}
        assert busy.headers["Location"] == f"/agents/status/{run_id}"
        assert 1 <= int(busy.headers["Retry-After"]) <= 2

        await wait_for_state(api, run_id, "DONE")
        assert await start_run(api) != run_id


async def test_two_app_instances_racing_accept_exactly_one(settings: Settings) -> None:
    payload = {"agent_type": "policy-checker", "user_id": USER_ID}

    async def burst(api: httpx.AsyncClient) -> list[int]:
        responses = await asyncio.gather(
            *(api.post("/agents/run", json=payload) for _ in range(25))
        )
        assert all(r.status_code == 202 or r.json()["detail"] == BUSY["detail"] for r in responses)
        return [r.status_code for r in responses]

    async for first in app_client(settings):
        async for second in app_client(settings):
            first_codes, second_codes = await asyncio.gather(burst(first), burst(second))
    codes = first_codes + second_codes

    assert codes.count(202) == 1
    assert codes.count(409) == len(codes) - 1


@pytest.mark.usefixtures("shared_worker")
async def test_200_concurrent_starts_through_the_helper_accept_exactly_one(
    temporal_client: Client, settings: Settings
) -> None:
    await join_deployment(temporal_client, settings, role="a test")
    target = settings.run_target()

    outcomes = await asyncio.gather(
        *(
            start_agent_run(temporal_client, "policy-checker", USER_ID, target=target)
            for _ in range(200)
        ),
        return_exceptions=True,
    )

    accepted = [outcome for outcome in outcomes if isinstance(outcome, str)]
    busy = [outcome for outcome in outcomes if isinstance(outcome, AgentBusyError)]
    assert len(accepted) == 1
    assert len(busy) == 199
    assert {error.running_run_id for error in busy} == set(accepted)


@pytest.mark.usefixtures("shared_worker")
async def test_worker_logs_are_json_with_the_run_keys(
    api: httpx.AsyncClient, shared_worker: LoggedProcess
) -> None:
    run_id = await start_run(api)
    await wait_for_state(api, run_id, "DONE")

    async def run_lines() -> list[dict[str, Any]]:
        lines = [line for line in shared_worker.log.read() if line.get("run_id") == run_id]
        events = {line["event"] for line in lines}
        assert {"agent_start", "policy_decision", "agent_complete"} <= events
        return lines

    lines = await assert_eventually(run_lines)
    for line in lines:
        assert line.keys() >= RUN_KEYS, line
        assert line["timestamp"].endswith("Z")
    start_line = next(line for line in lines if line["event"] == "agent_start")
    assert start_line["message"] == f"Hello, I am a policy-checker agent for {USER_ID}"
    decision = next(line for line in lines if line["event"] == "policy_decision")
    assert decision["decision"] in ("approved", "rejected")


@pytest.mark.usefixtures("shared_worker")
async def test_status_long_poll_answers_on_each_change_without_hammering(
    api: httpx.AsyncClient,
) -> None:
    run_id = await start_run(api)
    states = []
    for _ in range(5):
        response = await api.get(f"/agents/status/{run_id}", params={"wait": 30})
        assert response.status_code == 200
        states.append(response.json()["state"])
        if states[-1] == "DONE":
            break

    assert states[-1] == "DONE"
    assert len(states) <= 3, states
    assert states == sorted(states, key=["PENDING", "RUNNING", "DONE"].index)


async def test_status_wait_is_bounded(api: httpx.AsyncClient) -> None:
    response = await api.get("/agents/status/x", params={"wait": 61})
    assert response.status_code == 422
