"""Hostile and bad input against a real uvicorn process: property-based fuzzing of the whole
OpenAPI document, then hand-picked cases. Every answer is a declared, well-formed response;
nothing is a 5xx; the service keeps serving."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance
from temporalio.client import Client

from agent_runner.settings import Settings
from devtools.processes import free_port
from tests.helpers import USER_ID, LoggedProcess, make_settings

API_KEY = "test-key-0123456789"


def start_api(settings: Settings, log_path: Path) -> Iterator[str]:
    process = LoggedProcess.api(settings, log_path)
    url = f"http://127.0.0.1:{settings.api_port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{url}/healthz", timeout=1.0)
            break
        except httpx.TransportError:
            assert process.process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "the API did not start"
            time.sleep(0.2)
    yield url
    process.stop()


@pytest.fixture(scope="module")
def api_url(temporal_address: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real API process; no worker serves its task queue, so runs stay open."""
    settings = make_settings(
        temporal_address, task_queue=f"fuzz-{uuid.uuid4()}", api_port=free_port()
    )
    yield from start_api(settings, tmp_path_factory.mktemp("fuzz") / "api.log")


def test_openapi_fuzzing_finds_no_server_error_and_no_schema_violation(api_url: str) -> None:
    # schemathesis' own pytest plugin does not run under pytest 9 yet; drive hypothesis directly.
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def fuzz(case: schemathesis.Case) -> None:
            # page_token is opaque: any string fits the schema, only tokens this API issued are
            # valid, and a forged one is a clear 400, which this one check would count against.
            excluded = [positive_data_acceptance] if case.path == "/agents/runs" else []
            case.call_and_validate(excluded_checks=excluded)

        fuzz()


@pytest.fixture
def http(api_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, timeout=15.0) as client:
        yield client


def assert_clear_4xx(response: httpx.Response, *codes: int) -> None:
    assert response.status_code in codes, (response.status_code, response.text)
    body = response.json()
    assert "detail" in body
    assert "Traceback" not in response.text
    assert "temporalio" not in response.text


@pytest.mark.parametrize(
    ("content", "content_type", "codes"),
    [
        (b"not json", "application/json", (422,)),
        (
            b'{"agent_type": "policy-checker", "user_id": "' + USER_ID.encode() + b'"}',
            "text/plain",
            (422,),
        ),
        (b"[" * 5000 + b"]" * 5000, "application/json", (400, 422)),
        (
            b'{"agent_type": "policy-checker\\u0000\\u202e", "user_id": "'
            + USER_ID.encode()
            + b'"}',
            "application/json",
            (400,),
        ),
        ('{"agent_type": "政策", "user_id": "✓"}'.encode(), "application/json", (422,)),
        (
            b'{"agent_type": "Policy-Checker", "user_id": "' + USER_ID.encode() + b'"}',
            "application/json",
            (400,),
        ),
        (b"\xff\xfe\x00garbage", "application/json", (400, 422)),
        (b"", "application/json", (422,)),
    ],
)
def test_bad_bodies_get_a_clear_4xx(
    http: httpx.Client, content: bytes, content_type: str, codes: tuple[int, ...]
) -> None:
    response = http.post("/agents/run", content=content, headers={"content-type": content_type})
    assert_clear_4xx(response, *codes)


def test_a_body_of_several_megabytes_is_413(http: httpx.Client) -> None:
    response = http.post(
        "/agents/run",
        content=b'{"agent_type": "' + b"x" * (5 * 1024 * 1024) + b'"}',
        headers={"content-type": "application/json"},
    )
    assert_clear_4xx(response, 413)


def test_a_streamed_body_over_the_limit_is_413(http: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b" " * 4096

    response = http.post(
        "/agents/run", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_clear_4xx(response, 413)


def test_extra_fields_are_ignored(http: httpx.Client) -> None:
    response = http.post(
        "/agents/run",
        json={"agent_type": "nope", "user_id": USER_ID, "admin": True, "__proto__": {}},
    )
    assert_clear_4xx(response, 400)


@pytest.mark.parametrize(
    "path",
    [
        "/agents/status/" + "a" * 5000,
        "/agents/status/..%2F..%2Fetc%2Fpasswd",
        "/agents/status/%E2%80%AE%00",
        "/agents/status/01a21269-664b-7e42-949e-644fecafa2cb",
        "/agents/runs/" + "b" * 3000 + "/cancel",
    ],
)
def test_garbage_run_ids_are_404(http: httpx.Client, path: str) -> None:
    response = http.request("POST" if path.endswith("/cancel") else "GET", path)
    assert_clear_4xx(response, 404)


def test_a_run_id_of_another_workflow_is_404(
    http: httpx.Client, temporal_address: str, tmp_path: Path
) -> None:
    # A run of another workflow id (another deployment, or any other workflow).
    other = make_settings(
        temporal_address, task_queue=f"fuzz-other-{uuid.uuid4()}", api_port=free_port()
    )
    for other_url in start_api(other, tmp_path / "other.log"):
        started = httpx.post(
            f"{other_url}/agents/run", json={"agent_type": "policy-checker", "user_id": USER_ID}
        )
        assert started.status_code == 202
        response = http.get(f"/agents/status/{started.json()['run_id']}")
        assert_clear_4xx(response, 404)


def test_the_service_keeps_serving_after_all_that(http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/readyz").status_code == 200
    assert http.get("/agents/runs").status_code == 200


# --- API keys -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secured_url(temporal_address: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("secured")
    keys_file = directory / "keys"
    keys_file.write_text("file-key-abcdef\n\n")
    settings = make_settings(
        temporal_address,
        task_queue=f"secured-{uuid.uuid4()}",
        api_port=free_port(),
        api_keys=f"{API_KEY}, other-key",
        api_keys_file=keys_file,
    )
    log_path = directory / "api.log"
    yield from start_api(settings, log_path)
    assert API_KEY not in log_path.read_text(), "API keys must never be logged"
    assert "file-key-abcdef" not in log_path.read_text()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/agents/status/x"),
        ("GET", "/agents/current"),
        ("GET", "/agents/runs"),
        ("POST", "/agents/run"),
        ("POST", "/agents/runs/x/cancel"),
    ],
)
def test_agents_endpoints_need_a_valid_key(secured_url: str, method: str, path: str) -> None:
    body = {"agent_type": "policy-checker", "user_id": USER_ID}
    missing = httpx.request(method, secured_url + path, json=body)
    wrong = httpx.request(
        method, secured_url + path, json=body, headers={"Authorization": "Bearer wrong"}
    )
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert wrong.status_code == 403
    assert wrong.json() == {"detail": "Invalid API key"}


def test_valid_keys_from_the_list_and_the_file_are_accepted(secured_url: str) -> None:
    for key in (API_KEY, "other-key", "file-key-abcdef"):
        response = httpx.get(
            f"{secured_url}/agents/runs", headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status_code == 200, response.text


def test_probes_and_metrics_stay_open_by_default(secured_url: str) -> None:
    assert httpx.get(f"{secured_url}/healthz").status_code == 200
    assert httpx.get(f"{secured_url}/readyz").status_code == 200
    assert httpx.get(f"{secured_url}/metrics").status_code == 200
    spec = httpx.get(f"{secured_url}/openapi.json").json()
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


async def test_cached_finished_statuses_still_need_a_valid_key(
    secured_url: str, temporal_client: Client
) -> None:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=secured_url) as http:
        started = await http.post(
            "/agents/run", json={"agent_type": "policy-checker", "user_id": USER_ID}, headers=auth
        )
        assert started.status_code == 202
        run_id = started.json()["run_id"]
        [execution] = [e async for e in temporal_client.list_workflows(f"RunId = '{run_id}'")]
        await temporal_client.get_workflow_handle(execution.id, run_id=run_id).terminate("test")

        url = f"/agents/status/{run_id}"
        first = await http.get(url, headers=auth)  # reads Temporal, fills the cache
        second = await http.get(url, headers=auth)  # answered from the cache
        missing = await http.get(url)
        wrong = await http.get(url, headers={"Authorization": "Bearer wrong"})
        basic = await http.get(url, headers={"Authorization": f"Basic {API_KEY}"})

    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert second.json()["state"] == "ERROR"
    assert missing.status_code == 401
    assert wrong.status_code == 403
    assert basic.status_code in (401, 403)
