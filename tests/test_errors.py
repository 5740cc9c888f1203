"""Client mistakes are 4xx with a clear detail; an unreachable Temporal is a 503."""

from __future__ import annotations

import asyncio
import uuid
from urllib.parse import quote

import httpx
import pytest
from fastapi import Request
from temporalio.client import Client, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError, RPCStatusCode

from agent_runner.ids import ScopeKind
from agent_runner.runs.errors import is_unavailable, temporal_call
from agent_runner.settings import Settings
from api.errors import RETRY_AFTER_UNAVAILABLE_SECONDS, UNAVAILABLE_DETAIL, _unexpected_error
from api.main import create_app
from devtools.processes import free_port
from tests.helpers import USER_ID, ListHandler, app_client, make_settings, start_run


async def test_unknown_agent_type_is_400_and_logged(
    api: httpx.AsyncClient, log_lines: ListHandler
) -> None:
    response = await api.post("/agents/run", json={"agent_type": "claims-bot", "user_id": USER_ID})

    assert response.status_code == 400
    assert "Unsupported agent_type" in response.json()["detail"]
    assert "policy-checker" in response.json()["detail"]
    [line] = log_lines.events("unsupported_agent_type")
    assert line["message"] == "Unsupported agent_type"
    assert line["agent_type"] == "claims-bot"
    assert line["user_id"] == USER_ID


@pytest.mark.parametrize(
    "body",
    [
        {"agent_type": "policy-checker"},
        {"user_id": USER_ID},
        {"agent_type": "policy-checker", "user_id": "not-a-uuid"},
        {"agent_type": 7, "user_id": USER_ID},
        [],
    ],
)
async def test_malformed_body_is_422(api: httpx.AsyncClient, body: object) -> None:
    response = await api.post("/agents/run", json=body)

    assert response.status_code == 422
    assert isinstance(response.json()["detail"], list)


async def test_non_json_body_is_415(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/agents/run", content=b"agent_type=policy-checker", headers={"content-type": "text/plain"}
    )
    assert response.status_code == 415


@pytest.mark.parametrize("run_id", ["01a21269-664b-7e42-949e-644fecafa2cb", "garbage", "%00"])
async def test_unknown_or_malformed_run_id_is_404(api: httpx.AsyncClient, run_id: str) -> None:
    response = await api.get(f"/agents/status/{run_id}")

    assert response.status_code == 404
    assert response.json() == {"detail": "No run with this run_id"}


# Other spellings of a run's id (scale issue, finding 5): each resolved to the run, with a
# watcher of its own; the Unicode digits were a 500.
ALIASES = ["{}_1", "{}_01", "{}\n", "{}~_\u0661", "{}~_\u00b2", "{}~_\u2460", "{}\u2460", " {}"]


async def test_only_the_run_id_given_out_names_the_run(idle_api: httpx.AsyncClient) -> None:
    run_id = await start_run(idle_api)
    read = await idle_api.get(f"/agents/status/{run_id}")  # a read of an open run watches it
    assert read.status_code == 200, read.text
    assert await watched_runs(idle_api) == 1

    for alias in [spelling.format(run_id) for spelling in ALIASES] + [run_id.upper()]:
        path = quote(alias, safe="")
        answers = [
            await idle_api.get(f"/agents/status/{path}"),
            await idle_api.get(f"/agents/status/{path}?wait=1"),
            # The open run's own stream would never end: an alias taken for it fails here.
            await asyncio.wait_for(idle_api.get(f"/agents/runs/{path}/events"), 10),
            await idle_api.post(f"/agents/runs/{path}/cancel"),
        ]
        for answer in answers:
            assert answer.status_code == 404, (alias, answer.request.url, answer.text)
            assert answer.json() == {"detail": "No run with this run_id"}

    assert await watched_runs(idle_api) == 1, "no alias got a watcher of its own"
    assert (await idle_api.get(f"/agents/status/{run_id}")).json()["state"] == "PENDING"


async def watched_runs(api: httpx.AsyncClient) -> float:
    text = (await api.get("/metrics")).text
    [line] = [line for line in text.splitlines() if line.startswith("agent_runner_watched_runs ")]
    return float(line.rsplit(" ", 1)[1])


async def test_unreachable_temporal_is_503_with_a_clear_detail() -> None:
    settings = make_settings(f"127.0.0.1:{free_port()}", temporal_rpc_timeout_seconds=1.0)
    async for api in app_client(settings):
        started = await api.post(
            "/agents/run", json={"agent_type": "policy-checker", "user_id": USER_ID}
        )
        status = await api.get("/agents/status/01a21269-664b-7e42-949e-644fecafa2cb")

    for response in (started, status):
        assert response.status_code == 503
        assert response.json() == {"detail": "Temporal is unavailable, please retry later"}


async def test_a_server_too_busy_for_a_read_is_503_with_retry_after_never_500(
    settings: Settings,
) -> None:
    """Scale issue, finding 4: status reads under contention answered 500 for the server's
    RESOURCE_EXHAUSTED ("Workflow is busy."). Every read calls Temporal inside temporal_call();
    here the real RPCError goes through it and the app's real error handlers."""
    busy = RPCError("Workflow is busy.", RPCStatusCode.RESOURCE_EXHAUSTED, b"")
    update_cut_short = WorkflowUpdateRPCTimeoutOrCancelledError()
    update_cut_short.__cause__ = busy
    assert is_unavailable(busy)
    assert is_unavailable(update_cut_short)
    app = create_app(settings)

    @app.get("/busy-read")
    async def busy_read() -> None:
        with temporal_call():
            raise busy

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://agent-runner") as http:
        response = await http.get("/busy-read")

    assert response.status_code == 503, response.text
    assert response.json() == {"detail": UNAVAILABLE_DETAIL}
    assert response.headers["Retry-After"] == str(RETRY_AFTER_UNAVAILABLE_SECONDS)


# What JSON can carry and Python mishandles: every such body is a 422 whose detail is JSON.
@pytest.mark.parametrize(
    "content",
    [
        b'{"agent_type": "\\ud83d", "user_id": "' + USER_ID.encode() + b'"}',
        b'{"agent_type": "policy-checker", "user_id": "\\ud83d"}',
        b'{"agent_type": "policy-checker", "user_id": "\\udfff\\ud83d"}',
        b'{"agent_type": "\\ud83d"}',  # the missing field's error carries the whole body
        b'{"agent_type": NaN, "user_id": "' + USER_ID.encode() + b'"}',
        b'{"agent_type": "policy-checker", "user_id": Infinity}',
        b'{"agent_type": "policy-checker", "user_id": -Infinity}',
        b'{"agent_type": "policy-checker", "user_id": 1e309}',
        b'{"agent_type": "policy-checker", "user_id": ' + b"9" * 4000 + b"}",
        b'{"agent_type": ' + b"[" * 500 + b"]" * 500 + b', "user_id": "\\ud83d"}',
        b'{"agent_type": {"\\ud83d": NaN}}',
        b'{"agent_type": "policy-checker", "user_id": "\xed\xa0\xbd"}',  # a surrogate, raw
    ],
)
async def test_surrogates_and_non_finite_numbers_are_a_clear_422(
    api: httpx.AsyncClient, content: bytes
) -> None:
    response = await api.post(
        "/agents/run", content=content, headers={"content-type": "application/json"}
    )

    assert response.status_code == 422, response.text
    problems = response.json()["detail"]
    assert problems
    for problem in problems:
        assert {"loc", "msg", "type"} <= problem.keys()


@pytest.mark.parametrize(
    "content",
    [
        b"\x80not UTF-8",
        b"[" * 5000 + b"]" * 5000,
        b'{"a": ' * 3000 + b"1" + b"}" * 3000,
        b'{"agent_type": "policy-checker", "user_id": ' + b"9" * 5000 + b"}",
    ],
)
async def test_a_body_json_cannot_decode_is_422_like_any_other_non_json(
    api: httpx.AsyncClient, content: bytes
) -> None:
    response = await api.post(
        "/agents/run", content=content, headers={"content-type": "application/json"}
    )

    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert problem["type"] == "json_invalid"


@pytest.mark.parametrize(
    "query",
    ["wait=%ED%A0%BD", "wait=NaN", "wait=1e309", "wait=" + "9" * 5000, "limit=1e309"],
)
async def test_odd_query_values_are_a_clear_422(api: httpx.AsyncClient, query: str) -> None:
    path = "/agents/runs" if query.startswith("limit") else "/agents/status/x"
    response = await api.get(f"{path}?{query}")

    assert response.status_code == 422, response.text
    assert isinstance(response.json()["detail"], list)


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
async def test_probes_answer_head(api: httpx.AsyncClient, path: str) -> None:
    response = await api.head(path)

    assert response.status_code == 200
    assert response.content == b""


@pytest.mark.parametrize(
    "failing",
    [
        RPCError(
            "Unable to query workflow due to Workflow Task in failed state.",
            RPCStatusCode.FAILED_PRECONDITION,
            b"",
        ),
        RPCError(
            "Update-with-Start could not be executed.",
            RPCStatusCode.FAILED_PRECONDITION,
            b"\x08\x09\x12QUnable to perform workflow execution update due to Workflow Task in "
            b"failed state.",
        ),
        # Chaos seed 93151: a status read of a scope whose coordinator was terminated just
        # after it continued as new, before its new execution ran a task.
        RPCError(
            "Workflow execution closed before WorkflowTaskStarted event",
            RPCStatusCode.FAILED_PRECONDITION,
            b"\x08\t\x12:Workflow execution closed before WorkflowTaskStarted event\x1aJ\nHtype"
            b".googleapis.com/temporal.api.errordetails.v1.WorkflowNotReadyFailure",
        ),
    ],
)
def test_a_coordinator_whose_workflow_task_fails_is_unavailable_never_500(
    failing: RPCError,
) -> None:
    """Found by the randomized run: a coordinator no worker could run answered its readers and
    starters FAILED_PRECONDITION, and the API passed that on as 500."""
    assert is_unavailable(failing)
    assert not is_unavailable(
        RPCError("Workflow execution already completed", RPCStatusCode.FAILED_PRECONDITION, b"")
    )


async def test_a_request_cut_short_by_the_apis_own_shutdown_is_a_503_never_500() -> None:
    """Found by the randomized run (seed 47129): an API stopping cancelled a limits change's
    wait past its graceful shutdown; the SDK turns that into
    WorkflowUpdateRPCTimeoutOrCancelledError, and the API answered 500."""
    cut = WorkflowUpdateRPCTimeoutOrCancelledError()
    cut.__cause__ = asyncio.CancelledError("Task cancelled, timeout graceful shutdown exceeded")
    scope = {"type": "http", "method": "PUT", "path": "/agents/limits", "headers": [],
             "query_string": b"", "scheme": "http", "server": ("127.0.0.1", 8000)}  # fmt: skip

    answer = await _unexpected_error(Request(scope), cut)

    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == str(RETRY_AFTER_UNAVAILABLE_SECONDS)


async def test_a_start_answered_503_was_not_made(
    temporal_address: str, temporal_client: Client, shared_worker: object
) -> None:
    """Found trying the scale issue's many users (300 new users, 20 at a time): 11 starts that
    answered ``503`` ("please retry later") had started their run. The coordinator decided
    within the call's budget; its answer reached the API after it. A client that retried got a
    second run. Now the coordinator decides within part of the budget and the API asks once
    more for an answer that did not come back in time. A budget this short makes many starts
    of new scopes end on it: each answered ``503`` must have started nothing."""
    settings = make_settings(
        temporal_address, agent_scope="user_id", temporal_rpc_timeout_seconds=0.3
    )
    users = [str(uuid.uuid4()) for _ in range(60)]
    async for api in app_client(settings):
        answers = await asyncio.gather(
            *(api.post("/agents/run", json={"agent_type": "policy-checker", "user_id": user})
              for user in users)
        )  # fmt: skip
    assert {answer.status_code for answer in answers} <= {202, 503}
    refused = [
        user for user, answer in zip(users, answers, strict=True) if answer.status_code == 503
    ]
    # A coordinator that had not decided when its start's budget ran out refuses it later.
    await asyncio.sleep(1.0)
    made = []
    for user in refused:
        scope = settings.run_target(ScopeKind.USER_ID).scope(
            agent_type="policy-checker", user_id=user
        )
        try:
            await temporal_client.get_workflow_handle(scope.slot_id(0)).describe()
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
        else:
            made.append(user)
    assert made == [], f"{len(made)} of {len(refused)} starts answered 503 started a run"


async def test_starts_beyond_those_in_flight_wait_in_the_api_and_are_refused_there(
    temporal_address: str,
) -> None:
    """Found by bench/overload.py (2,000 users, 20 at a time, one core busy): with more starts
    in flight than the server and the workers answered within the budget, nearly all ran out of
    it, and each refused one had cost as much as an accepted one: 150 accepted in 9 minutes,
    2,168 refusals. Now a process keeps at most its gate's limit in flight (8 to begin with);
    the others wait in the process and, after a whole budget, are refused without asking
    Temporal anything; starts that run out of their budget halve the limit.

    Here no worker polls the deployment's task queue, so no start in flight can be answered."""
    settings = make_settings(
        temporal_address,
        agent_scope="user_id",
        task_queue=f"nobody-polls-{uuid.uuid4()}",
        temporal_rpc_timeout_seconds=1.0,
    )
    async for api in app_client(settings):
        answers = await asyncio.gather(
            *(api.post("/agents/run", json={"agent_type": "policy-checker",
                                             "user_id": str(uuid.uuid4())})
              for _ in range(20))
        )  # fmt: skip
        metrics = (await api.get("/metrics")).text
    busy = [
        answer
        for answer in answers
        if answer.status_code == 503
        and answer.json() == {"detail": "Too many starts at once, please retry later"}
    ]
    assert len(busy) == 12, [(answer.status_code, answer.text) for answer in answers]
    assert all(
        answer.headers["retry-after"] == str(RETRY_AFTER_UNAVAILABLE_SECONDS) for answer in busy
    )
    assert all(answer.status_code == 503 for answer in answers)
    assert "agent_runner_start_limit 4.0" in metrics
    assert "agent_runner_starts_refused_busy_total 12.0" in metrics


@pytest.mark.parametrize("answered_first", [False, True])
async def test_a_request_the_stopping_server_cancels_is_answered_503_unless_already_answered(
    answered_first: bool,
) -> None:
    """Chaos seed 37019: two status reads waiting on Temporal were cancelled by uvicorn past its
    graceful shutdown, and uvicorn answered 500. The outermost middleware answers 503 with
    Retry-After if nothing was sent yet, and lets the cancellation go on."""
    from api.main import AnswerWhenCutShort

    waiting = asyncio.Event()

    async def slow_route(scope: object, receive: object, send: object) -> None:
        if answered_first:
            await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        waiting.set()
        await asyncio.Event().wait()  # a read waiting on Temporal

    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "path": "/agents/status/x", "method": "GET", "headers": []}
    request = asyncio.create_task(AnswerWhenCutShort(slow_route)(scope, receive, send))  # type: ignore[arg-type]
    await waiting.wait()
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    statuses = [message["status"] for message in sent if message["type"] == "http.response.start"]
    if answered_first:
        assert statuses == [200]
        return
    assert statuses == [503]
    headers = dict(sent[0]["headers"])  # type: ignore[arg-type]
    assert headers[b"retry-after"] == b"2"
    assert sent[1]["body"] == b'{"detail":"Temporal is unavailable, please retry later"}'
