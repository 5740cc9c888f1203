"""Every status read answers the same way whether the run is finished (its status cached in the
API process), open, or unknown: the same odd query or credentials get the same code. Only a
request the route accepts differs, by what the run is: 200, 200, 404."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from urllib.parse import quote_from_bytes, unquote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from devtools.processes import free_port
from tests.helpers import (
    LoggedProcess,
    app_client,
    assert_eventually,
    coordinating_worker,
    make_settings,
    start_run,
    wait_http,
)

API_KEY = "status-key-0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
# What the route refuses: not a number, out of 0-60, not finite, empty.
ODD_WAITS = ["abc", "-1", "61", "1e309", "-1e309", "NaN", "nan", "inf", "Infinity", "", "%00"]
ODD_WAITS += ["%ED%A0%BD", "9" * 5000, "0x10", "1,5"]
ACCEPTED = (200, 200, 404)


async def runs_of_each_kind(api: httpx.AsyncClient, client: Client, **auth: str) -> list[str]:
    """A finished run whose status this API has cached, an open run, an unknown run id."""
    finished = await start_run(api, headers=auth)
    cancelled = await api.post(f"/agents/runs/{finished}/cancel", headers=auth)
    # 202 if its agent was still stopping after the API's few seconds (a starved machine).
    assert cancelled.status_code in (200, 202), cancelled.text

    async def ended() -> None:
        response = await api.get(f"/agents/status/{finished}?wait=5", headers=auth)
        assert response.json()["state"] == "ERROR", response.text

    await assert_eventually(ended, timeout=60)
    for _ in range(2):  # the first read fills the cache, the second is answered from it
        response = await api.get(f"/agents/status/{finished}", headers=auth)
        assert response.status_code == 200
        assert response.json()["state"] == "ERROR"
    running = await start_run(api, headers=auth)
    return [finished, running, str(uuid.uuid4())]


async def codes(
    api: httpx.AsyncClient, run_ids: list[str], query: str, headers: dict[str, str]
) -> tuple[int, ...]:
    answers = [
        await api.get(f"/agents/status/{run_id}{query}", headers=headers) for run_id in run_ids
    ]
    for answer in answers:
        assert "detail" in answer.json() or answer.status_code == 200, answer.text
    return tuple(answer.status_code for answer in answers)


@pytest.fixture
async def secured(temporal_address: str) -> AsyncIterator[httpx.AsyncClient]:
    settings_ = make_settings(temporal_address, task_queue=f"idle-{uuid.uuid4()}", api_keys=API_KEY)
    async with coordinating_worker(settings_):
        async for api in app_client(settings_):
            yield api


async def test_an_odd_wait_is_422_for_a_finished_a_running_and_an_unknown_run(
    idle_api: httpx.AsyncClient, temporal_client: Client
) -> None:
    run_ids = await runs_of_each_kind(idle_api, temporal_client)

    for wait in ODD_WAITS:
        assert await codes(idle_api, run_ids, f"?wait={wait}", {}) == (422, 422, 422), wait
    for query in ("", "?wait=0", "?wait=0.01", "?other=abc"):
        assert await codes(idle_api, run_ids, query, {}) == ACCEPTED, query


async def test_a_plain_read_answers_what_the_route_answers_for_every_run(
    idle_api: httpx.AsyncClient, temporal_client: Client
) -> None:
    """A plain GET is answered from what the process knows (the fast path) when it can; with a
    query it goes through the route. Both give the same code, body and headers."""
    run_ids = await runs_of_each_kind(idle_api, temporal_client)

    for run_id in run_ids:
        # The open run's status may still change (its watcher catching up): compare a routed
        # read with two plain reads around it that agree, since a status never goes back.
        async def agree(run_id: str = run_id) -> None:
            before = await idle_api.get(f"/agents/status/{run_id}")
            routed = await idle_api.get(f"/agents/status/{run_id}?wait=0")
            after = await idle_api.get(f"/agents/status/{run_id}")
            assert (before.status_code, before.content) == (after.status_code, after.content)
            assert (after.status_code, after.content) == (routed.status_code, routed.content)
            assert after.headers == routed.headers

        await assert_eventually(agree, timeout=30)


@pytest.mark.parametrize(
    ("authorization", "expected"),
    [
        (None, (401, 401, 401)),
        ("Bearer wrong", (403, 403, 403)),
        (f"Basic {API_KEY}", (401, 401, 401)),
        (f"Bearer{API_KEY}", (401, 401, 401)),
        (f"Bearer {API_KEY}x", (403, 403, 403)),
        (f"Bearer {API_KEY}", ACCEPTED),
        (f"bearer {API_KEY}", ACCEPTED),
        (f"Bearer  {API_KEY} ", ACCEPTED),
    ],
)
async def test_credentials_get_the_same_answer_for_every_run(
    secured: httpx.AsyncClient,
    temporal_client: Client,
    authorization: str | None,
    expected: tuple[int, ...],
) -> None:
    run_ids = await runs_of_each_kind(secured, temporal_client, **AUTH)
    headers = {} if authorization is None else {"Authorization": authorization}

    assert await codes(secured, run_ids, "", headers) == expected
    # A key is checked before the query: a bad wait with a bad key is 401/403, not 422.
    if expected != ACCEPTED:
        assert await codes(secured, run_ids, "?wait=abc", headers) == expected
    else:
        assert await codes(secured, run_ids, "?wait=abc", headers) == (422, 422, 422)


def long_poll(value: str) -> bool:
    """Whether ``value`` may be a wait the route accepts and waits out (Python's float is laxer
    than the route's, so this errs on the side of skipping)."""
    try:
        return float(value) > 0.1
    except ValueError:
        return False


def quote_bytes(raw: bytes) -> str:
    return quote_from_bytes(raw, safe="")


def quote_text(text: str) -> str:
    return quote_bytes(text.encode("utf-8", "surrogatepass"))


# Any parameter, with values that are odd numbers, text or bytes. Waits the route would accept
# and wait out are left out, so the open run's long poll never holds the test.
query_values = (
    st.sampled_from(ODD_WAITS)
    | st.text(st.characters(exclude_categories=()), max_size=8).map(quote_text)
    | st.binary(max_size=8).map(quote_bytes)
).filter(lambda value: not long_poll(unquote(value)))
queries = st.lists(
    st.tuples(
        st.sampled_from(["wait", "WAIT", "wait[]", "limit", "api_key", "%77ait"]), query_values
    ),
    max_size=3,
).map(lambda pairs: "?" + "&".join(f"{name}={value}" for name, value in pairs))


@pytest.fixture(scope="module")
async def process_runs(
    temporal_address: str,
    temporal_env: WorkflowEnvironment,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[str, list[str]]]:
    """A real API process, a real worker whose agents work for ten minutes, and one run of
    each kind (the test's reads block this event loop: what answers must be other processes)."""
    settings_ = make_settings(
        temporal_address,
        task_queue=f"idle-{uuid.uuid4()}",
        api_port=free_port(),
        agent_duration_seconds=600.0,
    )
    logs = tmp_path_factory.mktemp("status")
    worker = LoggedProcess.worker(settings_, logs / "worker.log")
    process = LoggedProcess.api(settings_, logs / "api.log")
    url = f"http://127.0.0.1:{settings_.api_port}"
    try:
        await wait_http(f"{url}/healthz")
        async with httpx.AsyncClient(base_url=url, timeout=15.0) as api:
            yield url, await runs_of_each_kind(api, temporal_env.client)
    finally:
        process.stop()
        worker.kill()


def test_any_query_gets_the_same_answer_for_every_run(process_runs: tuple[str, list[str]]) -> None:
    url, run_ids = process_runs
    with httpx.Client(base_url=url, timeout=15.0) as http:

        @given(query=queries)
        @settings(
            max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def same_answer(query: str) -> None:
            answers = [http.get(f"/agents/status/{run_id}{query}") for run_id in run_ids]
            answer = tuple(response.status_code for response in answers)
            assert answer in (ACCEPTED, (422, 422, 422)), (query, answer)

        same_answer()


@pytest.mark.parametrize("wait", ["nan", "NaN", "inf", "-inf"])
async def test_a_wait_that_is_no_finite_number_is_told_so(
    idle_api: httpx.AsyncClient, wait: str
) -> None:
    response = await idle_api.get(f"/agents/status/{uuid.uuid4()}?wait={wait}")

    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"] == "Input should be a finite number"
