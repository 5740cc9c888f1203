"""A Temporal server that hangs (SIGSTOP: it keeps its sockets, answers nothing) is an outage:
every route that calls Temporal answers 503 with a ``detail`` and a ``Retry-After``, never a
500, and the API serves again once the server resumes (SIGCONT).

A dead server is refused at once (UNAVAILABLE, tests/test_reliability.py scenario 6); a hung
one makes each call end on the client's own RPC timeout instead. Real processes: a Temporal dev
server, one API and one worker.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator

import httpx
import pytest
from temporalio.client import WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from agent_runner.runs import TemporalUnavailableError
from agent_runner.runs.errors import is_unavailable, temporal_call
from tests.helpers import USER_ID, assert_eventually, start_run
from tests.stack import Stack

pytestmark = pytest.mark.reliability

# Long enough that the run started before the pause is still open while the server is paused.
AGENT_SECONDS = 120.0


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    stack = Stack(
        tmp_path_factory.mktemp("outage"),
        {
            "task_queue": "outage",
            "workflow_id": "agent-runner-outage",
            "agent_duration_seconds": AGENT_SECONDS,
        },
    )
    try:
        await stack.start(apis=1, workers=1)
        yield stack
    finally:
        await stack.stop_all()


def assert_unavailable(response: httpx.Response) -> None:
    where = f"{response.request.method} {response.request.url.path}"
    assert response.status_code == 503, f"{where}: {response.status_code} {response.text}"
    assert response.headers.get("content-type", "").startswith("application/json"), where
    detail = response.json()["detail"]
    assert isinstance(detail, str), where
    assert detail, where
    assert "Traceback" not in response.text, where
    assert response.headers.get("retry-after", "").isdigit(), f"{where}: {response.headers}"


async def test_a_hung_temporal_server_is_503_on_every_route_then_recovers(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url(0), timeout=30.0) as http:
        # Started, but never read: no watcher of this API process holds its status.
        run_id = await start_run(http)
        assert stack.server.process is not None
        stack.server.process.send_signal(signal.SIGSTOP)
        try:
            answers = [
                await http.post(
                    "/agents/run", json={"agent_type": "policy-checker", "user_id": USER_ID}
                ),
                await http.get(f"/agents/status/{run_id}"),
                await http.get("/agents/runs"),
                await http.post(f"/agents/runs/{run_id}/cancel"),
                await http.get("/agents/queue"),
                await http.get("/agents/current"),
                await http.get(f"/agents/status/{run_id}", params={"wait": 1}),
                await http.get(f"/agents/runs/{run_id}/events"),
            ]
        finally:
            stack.server.process.send_signal(signal.SIGCONT)
        for response in answers:
            assert_unavailable(response)

        async def serving() -> None:
            for path in (f"/agents/status/{run_id}", "/agents/runs", "/agents/queue"):
                response = await http.get(path)
                assert response.status_code == 200, f"{path}: {response.text}"

        await assert_eventually(serving, timeout=60, interval=0.5)
        cancelled = await http.post(f"/agents/runs/{run_id}/cancel")
        assert cancelled.status_code in (200, 202), cancelled.text


def update_error(cause: BaseException) -> WorkflowUpdateRPCTimeoutOrCancelledError:
    err = WorkflowUpdateRPCTimeoutOrCancelledError()
    err.__cause__ = cause
    return err


def test_only_a_server_that_did_not_answer_is_an_outage() -> None:
    # What the client raises when its RPC timeout cuts short a call to a hung server.
    hung = RPCError("Timeout expired", RPCStatusCode.CANCELLED, b"")
    assert is_unavailable(hung)
    assert is_unavailable(RPCError("refused", RPCStatusCode.UNAVAILABLE, b""))
    # A query just after a server restart, before any worker polled again.
    no_poller = "no poller seen for task queue recently, worker may be down"
    assert is_unavailable(RPCError(no_poller, RPCStatusCode.FAILED_PRECONDITION, b""))
    # The server killed while a call waited on its connection.
    assert is_unavailable(RPCError("transport error", RPCStatusCode.UNKNOWN, b""))
    assert is_unavailable(update_error(hung))
    assert not is_unavailable(RPCError("no such run", RPCStatusCode.NOT_FOUND, b""))
    # The SDK's answer when our own task was cancelled while an update waited.
    assert not is_unavailable(update_error(asyncio.CancelledError()))
    with pytest.raises(TemporalUnavailableError), temporal_call():
        raise hung


def test_a_coordinator_ended_under_its_update_is_an_outage_not_a_500() -> None:
    # What the server says of an accepted update when its workflow was terminated before the
    # handler returned (the randomized run's nemesis terminates coordinators; a start got 500).
    why = "Workflow Update failed because the Workflow completed before the Update completed."
    err = WorkflowUpdateFailedError(ApplicationError(why, type="AcceptedUpdateCompletedWorkflow"))
    with pytest.raises(TemporalUnavailableError), temporal_call():
        raise err
    # What it says of an update whose task a worker completed without processing it (the SDK
    # did so just after a server restart).
    unprocessed = "Workflow Update is rejected because it wasn't processed by worker."
    err = WorkflowUpdateFailedError(ApplicationError(unprocessed, type="UnprocessedUpdate"))
    with pytest.raises(TemporalUnavailableError), temporal_call():
        raise err
    other = WorkflowUpdateFailedError(ApplicationError("refused", type="ValueError"))
    with pytest.raises(WorkflowUpdateFailedError), temporal_call():
        raise other
    with pytest.raises(asyncio.CancelledError), temporal_call():
        raise asyncio.CancelledError
    with pytest.raises(WorkflowUpdateRPCTimeoutOrCancelledError), temporal_call():
        raise update_error(asyncio.CancelledError())
