"""Operating the service: history and filters, programmatic starts, listing, cancel,
idempotency, health and metrics."""

from __future__ import annotations

import asyncio
import http.server
import json
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from temporalio.client import Client

from agent_runner import search_attributes
from agent_runner.runs import AgentBusyError, OnBusy, Runs, start_agent_run, start_request
from agent_runner.settings import Settings
from devtools.processes import free_port, temporal_cli
from tests.helpers import (
    USER_ID,
    LoggedProcess,
    app_client,
    assert_eventually,
    in_process_worker,
    make_settings,
    post_run,
    start_run,
    wait_for_state,
)

# --- Web UI history -----------------------------------------------------------------------


async def test_runs_carry_search_attributes_and_a_summary(
    temporal_client: Client, idle_settings: Settings, idle_api: httpx.AsyncClient
) -> None:
    run_id = await start_run(idle_api, "document-extractor")

    async def on_its_slot() -> dict[str, Any]:
        # PENDING from the coordinator's grant comes a moment before the slot's execution.
        body: dict[str, Any] = (await idle_api.get(f"/agents/status/{run_id}")).json()
        assert body["state"] == "PENDING", body
        assert body.get("temporal_run_id"), body
        return body

    body = await assert_eventually(on_its_slot, timeout=60)

    handle = temporal_client.get_workflow_handle(
        body["workflow_id"], run_id=body["temporal_run_id"]
    )
    description = await handle.describe()
    attributes = description.typed_search_attributes
    assert attributes.get(search_attributes.AGENT_TYPE) == "document-extractor"
    assert attributes.get(search_attributes.USER_ID) == USER_ID
    assert attributes.get(search_attributes.AGENT_RUN_ID) == run_id
    assert await description.static_summary() == f"document-extractor for {USER_ID}"
    assert body["workflow_id"] == f"{idle_settings.workflow_id}:slot-0"
    await idle_api.post(f"/agents/runs/{run_id}/cancel")


# --- Programmatic starts ----------------------------------------------------------------------


def cli_admit(
    address: str, settings: Settings, on_busy: str = "reject"
) -> subprocess.CompletedProcess[str]:
    """What another system runs: an update-with-start of the scope's coordinator."""
    request = {
        "request_id": f"crm-{uuid.uuid4()}",
        "run": {"agent_type": "policy-checker", "user_id": USER_ID},
        "on_busy": on_busy,
    }
    return subprocess.run(
        [
            str(temporal_cli()),
            "workflow",
            "execute-update-with-start",
            "--address",
            address,
            "--type",
            "AgentScopeWorkflow",
            "--task-queue",
            settings.task_queue,
            "--workflow-id",
            settings.workflow_id,
            "--id-conflict-policy",
            "UseExisting",
            "--update-name",
            "admit",
            "--update-input",
            json.dumps([request]),
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.usefixtures("shared_worker")
async def test_cli_start_when_idle_runs_and_is_visible_through_the_api(
    temporal_address: str, settings: Settings, api: httpx.AsyncClient
) -> None:
    result = await asyncio.to_thread(cli_admit, temporal_address, settings)

    assert result.returncode == 0, result.stderr
    [answer] = json.loads(result.stdout)["updateResult"]
    assert answer["admission"] == "started"
    body = await wait_for_state(api, answer["run_id"], "DONE")
    assert body["agent_type"] == "policy-checker"
    assert body["result"] in ("approved", "rejected")

    async def listed() -> None:
        runs = (await api.get("/agents/runs")).json()["runs"]
        assert [run["run_id"] for run in runs] == [answer["run_id"]]

    await assert_eventually(listed)


async def test_cli_start_while_busy_is_refused_naming_the_holder(
    temporal_address: str, idle_settings: Settings, idle_api: httpx.AsyncClient
) -> None:
    holder = await start_run(idle_api)

    refused = await asyncio.to_thread(cli_admit, temporal_address, idle_settings)
    queued = await asyncio.to_thread(cli_admit, temporal_address, idle_settings, "enqueue")

    assert refused.returncode == 0, refused.stderr
    [busy] = json.loads(refused.stdout)["updateResult"]
    assert (busy["admission"], busy["run_id"], busy["holder_run_id"]) == ("busy", None, holder)
    [waiting] = json.loads(queued.stdout)["updateResult"]
    assert (waiting["admission"], waiting["queue_position"]) == ("queued", 1)
    for run_id in (waiting["run_id"], holder):
        await idle_api.post(f"/agents/runs/{run_id}/cancel")


@pytest.mark.usefixtures("idle_api")
async def test_python_helper_raises_busy_with_the_holder(
    temporal_client: Client, idle_settings: Settings
) -> None:
    target = idle_settings.run_target()
    holder = await start_agent_run(temporal_client, "policy-checker", USER_ID, target=target)

    with pytest.raises(AgentBusyError) as busy:
        await start_agent_run(temporal_client, "document-extractor", USER_ID, target=target)

    assert busy.value.running_run_id == holder


# --- Listing and the current run -----------------------------------------------------------


@pytest.mark.usefixtures("shared_worker")
async def test_runs_are_listed_newest_first_with_filters_and_pages(api: httpx.AsyncClient) -> None:
    other_user = str(uuid.uuid4())
    run_ids = []
    for agent_type, user_id in [
        ("document-extractor", USER_ID),
        ("policy-checker", other_user),
        ("document-extractor", USER_ID),
    ]:
        run_ids.append(await start_run(api, agent_type, user_id=user_id))
        await wait_for_state(api, run_ids[-1], "DONE")

    async def listed(query: str) -> list[str]:
        response = await api.get(f"/agents/runs?{query}")
        assert response.status_code == 200, response.text
        return [run["run_id"] for run in response.json()["runs"]]

    async def all_three_visible() -> None:
        assert await listed("") == run_ids[::-1]

    await assert_eventually(all_three_visible)
    assert await listed("agent_type=document-extractor") == [run_ids[2], run_ids[0]]
    assert await listed(f"user_id={other_user}") == [run_ids[1]]
    assert await listed("state=DONE") == run_ids[::-1]
    assert await listed("state=ERROR") == []

    first = (await api.get("/agents/runs?limit=2")).json()
    second = (await api.get(f"/agents/runs?limit=2&page_token={first['next_page_token']}")).json()
    assert [run["run_id"] for run in first["runs"] + second["runs"]] == run_ids[::-1]
    assert second["next_page_token"] is None
    assert first["runs"][0]["agent_type"] == "document-extractor"
    assert first["runs"][0]["state"] == "DONE"


@pytest.mark.parametrize(
    "query",
    [
        "agent_type=Claims%20Bot",
        "page_token=%%%",
        "page_token=AAAA",
        "state=done",
        "limit=0",
        "limit=101",
        "user_id=x",
    ],
)
async def test_bad_list_filters_are_4xx(api: httpx.AsyncClient, query: str) -> None:
    response = await api.get(f"/agents/runs?{query}")
    assert response.status_code in (400, 422)
    assert "detail" in response.json()


async def test_current_is_the_open_run_or_404(
    temporal_client: Client, idle_settings: Settings, idle_api: httpx.AsyncClient
) -> None:
    assert (await idle_api.get("/agents/current")).status_code == 404

    run_id = await start_run(idle_api)
    current = await idle_api.get("/agents/current")
    assert current.status_code == 200
    assert current.json()["run_id"] == run_id
    assert current.json()["state"] == "PENDING"

    await idle_api.post(f"/agents/runs/{run_id}/cancel")
    assert (await idle_api.get("/agents/current")).status_code == 404


# --- Cancel ---------------------------------------------------------------------------------------


async def test_cancel_stops_the_agent_and_ends_the_run_error_cancelled(
    temporal_client: Client, idle_settings: Settings, idle_api: httpx.AsyncClient
) -> None:
    async with in_process_worker(temporal_client, idle_settings, duration_seconds=60):
        run_id = await start_run(idle_api)
        await wait_for_state(idle_api, run_id, "RUNNING")

        cancelled = await idle_api.post(f"/agents/runs/{run_id}/cancel")
        # 200 once the run has ended; 202 if its agent had not stopped within the answer's wait.
        assert cancelled.status_code in (200, 202), cancelled.text
        assert cancelled.json()["run_id"] == run_id
        body = await wait_for_state(idle_api, run_id, "ERROR")

    assert body["error"] == "cancelled"
    again = await idle_api.post(f"/agents/runs/{run_id}/cancel")
    assert again.status_code == 409
    assert (await post_run(idle_api)).status_code == 202


async def test_cancel_of_an_unknown_run_is_404(api: httpx.AsyncClient) -> None:
    response = await api.post("/agents/runs/nope/cancel")
    assert response.status_code == 404


# --- Idempotency ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("shared_worker")
async def test_idempotency_key_returns_the_same_run_while_open_and_after(
    api: httpx.AsyncClient,
) -> None:
    key = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    first, second = await asyncio.gather(post_run(api, headers=key), post_run(api, headers=key))
    assert first.status_code == second.status_code == 202
    run_id = first.json()["run_id"]
    assert second.json()["run_id"] == run_id

    await wait_for_state(api, run_id, "DONE")
    after = await post_run(api, headers=key)
    assert after.status_code == 202
    assert after.json()["run_id"] == run_id

    other_body = await post_run(api, "document-extractor", headers=key)
    assert other_body.status_code == 422
    assert "different request" in other_body.json()["detail"]

    fresh = await post_run(api, headers={"Idempotency-Key": f"order-{uuid.uuid4()}"})
    assert fresh.status_code == 202
    assert fresh.json()["run_id"] != run_id


async def test_malformed_idempotency_key_is_422(api: httpx.AsyncClient) -> None:
    response = await post_run(api, headers={"Idempotency-Key": "has spaces and 'quotes'"})
    assert response.status_code == 422


# --- Health and metrics --------------------------------------------------------------------------


async def test_healthz_and_readyz(api: httpx.AsyncClient) -> None:
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    ready = await api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}


async def test_readyz_is_503_when_temporal_is_down_or_the_namespace_is_missing(
    temporal_address: str,
) -> None:
    for settings in (
        make_settings(f"127.0.0.1:{free_port()}", temporal_rpc_timeout_seconds=1.0),
        make_settings(temporal_address, temporal_namespace="no-such-namespace"),
    ):
        async for api in app_client(settings):
            assert (await api.get("/healthz")).status_code == 200
            response = await api.get("/readyz")
            assert response.status_code == 503
            assert response.json()["detail"]


@pytest.mark.usefixtures("shared_worker")
async def test_metrics_count_requests_and_runs(api: httpx.AsyncClient) -> None:
    run_id = await start_run(api)
    assert (await post_run(api)).status_code == 409
    await wait_for_state(api, run_id, "DONE")

    text = (await api.get("/metrics")).text

    assert (
        'agent_runner_http_requests_total{method="POST",route="/agents/run",status="202"} 1.0'
        in text
    )
    assert (
        'agent_runner_http_requests_total{method="POST",route="/agents/run",status="409"} 1.0'
        in text
    )
    assert "agent_runner_runs_accepted_total 1.0" in text
    assert "agent_runner_runs_rejected_busy_total 1.0" in text
    assert 'agent_runner_runs_finished_total{state="DONE"} 1.0' in text
    assert (
        'agent_runner_http_request_duration_seconds_bucket{le="0.005",method="GET",route="/agents/status/{run_id}"}'
        in text
    )


async def test_worker_serves_sdk_metrics_with_the_time_runs_waited_in_the_queue(
    temporal_address: str, tmp_path: Path
) -> None:
    port = free_port()
    settings = make_settings(
        temporal_address,
        task_queue=f"metrics-{uuid.uuid4()}",
        worker_metrics_address=f"127.0.0.1:{port}",
    )
    worker = LoggedProcess.worker(settings, tmp_path / "worker.log")
    client = await Client.connect(temporal_address)
    try:
        # One run holds the slot, a second waits for it in the queue, then runs.
        runs = Runs(client, settings.run_target())
        for _ in range(2):
            request = start_request(
                "policy-checker", USER_ID, policy=settings.run_policy(), on_busy=OnBusy.ENQUEUE
            )
            queued = await runs.start(request)
        assert queued.queue_position == 1

        async def scraped() -> None:
            async with httpx.AsyncClient() as http:
                try:
                    response = await http.get(f"http://127.0.0.1:{port}/metrics")
                except httpx.TransportError as err:
                    raise AssertionError(str(err)) from err
            assert "temporal_" in response.text
            assert "agent_runner_queue_wait_seconds_count" in response.text

        await assert_eventually(scraped, timeout=60)
    finally:
        worker.stop()


# --- Tracing -------------------------------------------------------------------------------------


class OtlpReceiver(http.server.BaseHTTPRequestHandler):
    """Stands in for an OpenTelemetry collector: keeps every OTLP/HTTP export it is sent."""

    exports: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.exports.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


async def test_tracing_exports_spans_of_the_api_and_the_worker(
    temporal_address: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), OtlpReceiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    settings = make_settings(
        temporal_address,
        task_queue=f"traced-{uuid.uuid4()}",
        otel_exporter_otlp_endpoint=f"http://127.0.0.1:{server.server_address[1]}",
    )
    worker = LoggedProcess.worker(settings, tmp_path / "worker.log")
    try:
        async for api in app_client(settings):
            run_id = await start_run(api)
            await wait_for_state(api, run_id, "DONE")

        async def exported() -> None:
            assert {path for path, _ in OtlpReceiver.exports} == {"/v1/traces"}
            spans = b"".join(body for _, body in OtlpReceiver.exports)
            for name in (
                b"StartUpdateWithStartWorkflow:AgentScopeWorkflow",  # the API's start
                b"HandleUpdate:admit",  # the coordinator decides
                b"StartChildWorkflow:AgentRunWorkflow",  # and starts the run on its slot
                b"RunActivity:run_agent",  # which runs the agent
            ):
                assert name in spans
            for service in (b"agent-runner-api", b"agent-runner-worker"):
                assert service in spans

        await assert_eventually(exported)
    finally:
        worker.stop()
        server.shutdown()
