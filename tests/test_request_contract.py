"""The edges of the bodies' contract, against the real app: a body field outside the contract
(``agent_type``, ``user_id``, ``params``, ``on_busy`` for ``POST /agents/run``; ``slots``,
``queue_max`` for ``PUT /agents/limits``) is a 422 naming it, and with API keys set a request
without a valid key is refused (401, 403) whatever its body, before anything in the body
counts."""

from __future__ import annotations

import http.client
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from agent_runner.settings import Settings
from api.errors import MAX_PROBLEMS, UNSUPPORTED_MEDIA_DETAIL
from devtools.processes import free_port
from tests.helpers import USER_ID, LoggedProcess, app_client, make_settings, wait_http

API_KEY = "contract-key-0123456789"
NOT_JSON_BODIES = [
    b"{",
    b"\xff\xfe not UTF-8",
    b"[" * 20_000,
    b'{"n": 1' + b"0" * 5000 + b"}",
]


@pytest.fixture
async def keyed_api(temporal_address: str) -> AsyncIterator[httpx.AsyncClient]:
    settings: Settings = make_settings(temporal_address, api_keys=API_KEY)
    async for client in app_client(settings):
        yield client


@pytest.mark.parametrize(
    ("field", "value"),
    [("on-busy", "enqueue"), ("onBusy", "enqueue"), ("param", {"document": "x.pdf"})],
)
async def test_a_field_outside_the_contract_is_422_naming_it(
    api: httpx.AsyncClient, field: str, value: object
) -> None:
    response = await api.post(
        "/agents/run", json={"agent_type": "policy-checker", "user_id": USER_ID, field: value}
    )

    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert problem["loc"] == ["body", field]
    assert problem["type"] == "extra_forbidden"


@pytest.mark.parametrize(("field", "value"), [("slot", 3), ("queue-max", 10), ("scope_kind", "x")])
async def test_a_limits_field_outside_the_contract_is_422_naming_it(
    api: httpx.AsyncClient, field: str, value: object
) -> None:
    response = await api.put("/agents/limits", json={"slots": 2, field: value})

    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert problem["loc"] == ["body", field]
    assert problem["type"] == "extra_forbidden"


async def test_a_body_with_thousands_of_problems_gets_a_short_422(api: httpx.AsyncClient) -> None:
    # Each unknown parameter was a problem of its own: 3,000 of them in a 40 KB request were a
    # 290 KB answer.
    params = {f"k{index}": index for index in range(3000)}

    response = await api.post(
        "/agents/run",
        json={"agent_type": "policy-checker", "user_id": USER_ID, "params": params},
    )

    assert response.status_code == 422, response.text[:300]
    problems = response.json()["detail"]
    assert len(problems) == MAX_PROBLEMS + 1
    assert problems[0]["loc"] == ["body", "params", "k0"]
    assert problems[-1] == {
        "type": "too_many_problems",
        "loc": [],
        "msg": f"and {3000 - MAX_PROBLEMS} more problems of the same request",
    }
    assert len(response.content) < 10_000


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
async def test_a_body_that_says_it_is_not_json_is_415(
    api: httpx.AsyncClient, content_type: str
) -> None:
    # curl -d sends a form's type: it was a 422 "Input should be a valid dictionary".
    body = json.dumps({"agent_type": "nope", "user_id": USER_ID})

    response = await api.post("/agents/run", content=body, headers={"content-type": content_type})

    assert response.status_code == 415, response.text
    assert response.json() == {"detail": UNSUPPORTED_MEDIA_DETAIL}


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "application/merge-patch+json"],
)
async def test_a_json_body_is_read_whatever_its_json_type(
    api: httpx.AsyncClient, content_type: str
) -> None:
    body = json.dumps({"agent_type": "nope", "user_id": USER_ID})

    response = await api.post("/agents/run", content=body, headers={"content-type": content_type})

    assert response.status_code == 400, response.text  # read, and the agent type is unknown


async def test_the_contracts_own_fields_are_accepted(api: httpx.AsyncClient) -> None:
    # An unknown agent type: the fields pass validation and the route answers its own 400.
    response = await api.post(
        "/agents/run",
        json={"agent_type": "nope", "user_id": USER_ID, "params": None, "on_busy": "enqueue"},
    )

    assert response.status_code == 400, response.text


@pytest.mark.parametrize("body", NOT_JSON_BODIES, ids=["syntax", "utf8", "deep", "digits"])
async def test_without_a_valid_key_a_body_that_is_not_json_is_refused_for_the_key(
    keyed_api: httpx.AsyncClient, body: bytes
) -> None:
    json_type = {"content-type": "application/json"}

    missing = await keyed_api.post("/agents/run", content=body, headers=json_type)
    wrong = await keyed_api.post(
        "/agents/run", content=body, headers={**json_type, "Authorization": "Bearer wrong"}
    )
    valid = await keyed_api.post(
        "/agents/run", content=body, headers={**json_type, "Authorization": f"Bearer {API_KEY}"}
    )

    assert missing.status_code == 401, missing.text
    assert missing.headers["www-authenticate"] == "Bearer"
    assert wrong.status_code == 403, wrong.text
    assert wrong.json() == {"detail": "Invalid API key"}
    assert valid.status_code == 422, valid.text
    assert valid.json()["detail"][0]["type"] == "json_invalid"


async def test_without_a_valid_key_a_body_with_bad_fields_is_refused_for_the_key(
    keyed_api: httpx.AsyncClient,
) -> None:
    body = {"agent_type": 7, "user_id": "bob", "on-busy": "enqueue"}

    missing = await keyed_api.post("/agents/run", json=body)
    valid = await keyed_api.post(
        "/agents/run", json=body, headers={"Authorization": f"Bearer {API_KEY}"}
    )

    assert missing.status_code == 401, missing.text
    assert valid.status_code == 422, valid.text
    assert {tuple(problem["loc"]) for problem in valid.json()["detail"]} == {
        ("body", "agent_type"),
        ("body", "user_id"),
        ("body", "on-busy"),
    }


@pytest.mark.usefixtures("shared_worker")  # a start is decided on a worker
async def test_with_a_valid_key_a_run_starts_and_the_probes_need_none(
    keyed_api: httpx.AsyncClient,
) -> None:
    started = await keyed_api.post(
        "/agents/run",
        json={"agent_type": "policy-checker", "user_id": USER_ID},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    health = await keyed_api.get("/healthz")

    assert started.status_code == 202, started.text
    assert health.status_code == 200


@pytest.mark.parametrize("connection", ["close", "keep-alive"])
async def test_a_client_that_sends_its_whole_body_first_reads_the_401(
    temporal_address: str, tmp_path: Path, connection: str
) -> None:
    """http.client sends the whole body before it reads, and the body is read and dropped
    before the refusal closes the connection: a socket closed with unread data is reset, which
    can lose the answer on its way."""
    settings = make_settings(temporal_address, api_keys=API_KEY, api_port=free_port())
    api = LoggedProcess.api(settings, tmp_path / "api.log")
    try:
        await wait_http(f"http://127.0.0.1:{settings.api_port}/healthz")
        body = b'{"agent_type": "' + b"x" * 60_000 + b'"}'
        for _ in range(5):
            client = http.client.HTTPConnection("127.0.0.1", settings.api_port, timeout=30)
            try:
                client.request(
                    "POST",
                    "/agents/run",
                    body=body,
                    headers={"content-type": "application/json", "Connection": connection},
                )
                response = client.getresponse()
                assert response.status == 401
                assert json.loads(response.read())["detail"].startswith("Missing API key")
            finally:
                client.close()
    finally:
        api.stop()
