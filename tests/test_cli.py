"""The ``agent-runner`` command line: the real console script, run as a process, against real
API processes, a real worker process and a real Temporal server.

Two APIs: one whose runs the session's worker process serves (agents of 0.5 s), and one that
wants an API key, with a per-user scope and an in-process worker whose policy checker each test
drives attempt by attempt (progress, fail, succeed), so that what the command shows while a
run goes on is asserted without guessing at timings."""

from __future__ import annotations

import asyncio
import socket
import threading
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from agent_runner.agents import Agent, AgentContext, NoParams
from agent_runner.settings import Settings
from cli.models import RunStatus, transitions
from devtools.processes import free_port
from tests.cli_helpers import (
    COMMAND_TIMEOUT,
    ApiProcess,
    CliProcess,
    Result,
    Terminal,
    agent_runner,
    api_process,
    start_api,
)
from tests.cli_proxy import Proxy
from tests.helpers import LoggedProcess, assert_eventually, in_process_worker

API_KEY = "cli-test-key-0123456789"
# The exit codes are a contract with scripts: written out here, not imported.
EXIT_RUN_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_CONFLICT = 4
EXIT_NOT_FOUND = 5
EXIT_AUTH = 6
EXIT_INTERRUPTED = 130


# JSON nested deeper than any parser allows.
DEEP_JSON = "[" * 20_000 + "]" * 20_000
SOME_USER = str(uuid.UUID(int=1))


def new_user() -> str:
    return str(uuid.uuid4())


def clean(result: Result) -> None:
    """A user's mistake or a network failure: a message, never a traceback."""
    assert "Traceback" not in result.err, result
    assert result.err.strip(), result


class Scripted(Agent[NoParams]):
    """A policy checker each test drives: every attempt reports progress, then waits for the
    test's word for its user, ``fail`` or ``succeed``. A cancel ends the wait, except for a
    ``stubborn`` user's attempts, which go on waiting for the word."""

    name = "policy-checker"

    def __init__(self) -> None:
        self.outcomes: defaultdict[str, asyncio.Queue[str]] = defaultdict(asyncio.Queue)
        self.stubborn: set[str] = set()

    def then(self, user: str, *outcomes: str) -> None:
        for outcome in outcomes:
            self.outcomes[user].put_nowait(outcome)

    async def run(self, ctx: AgentContext, params: NoParams) -> str:
        await ctx.report_progress(0.5, "scanning the policy")
        word = asyncio.ensure_future(self.outcomes[ctx.user_id].get())
        while True:
            try:
                outcome = await asyncio.shield(word)
                break
            except asyncio.CancelledError:
                if ctx.user_id not in self.stubborn:
                    word.cancel()
                    raise
        if outcome == "fail":
            raise RuntimeError(f"scanner offline (attempt {ctx.attempt})")
        return "approved"


@dataclass(frozen=True)
class ScriptedApi:
    url: str
    settings: Settings
    agent: Scripted

    async def cli(self, *args: str, url: str | None = None) -> Result:
        return await agent_runner(*args, url=url or self.url, api_key=API_KEY)

    async def start(self, *args: str, url: str | None = None) -> CliProcess:
        return await CliProcess.start(*args, url=url or self.url, api_key=API_KEY)

    async def status(self, run_id: str) -> dict[str, Any]:
        result = await self.cli("status", run_id, "--json")
        assert result.code == 0, result
        body: dict[str, Any] = result.json()
        return body


@pytest.fixture(scope="module")
async def served(
    temporal_address: str, shared_worker: LoggedProcess, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ApiProcess]:
    """A real API whose runs the session's real worker process serves."""
    log = tmp_path_factory.mktemp("cli") / "served-api.log"
    async with api_process(temporal_address, log) as api:
        yield api


@pytest.fixture(scope="module")
async def scripted(
    temporal_env: WorkflowEnvironment,
    temporal_address: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[ScriptedApi]:
    agent = Scripted()
    async with (
        api_process(
            temporal_address,
            tmp_path_factory.mktemp("cli") / "scripted-api.log",
            task_queue=f"cli-{uuid.uuid4()}",
            api_keys=API_KEY,
            agent_scope="user_id",
            agent_max_attempts=2,
        ) as api,
        in_process_worker(temporal_env.client, api.settings, [agent]),
    ):
        yield ScriptedApi(api.url, api.settings, agent)


@pytest.fixture(params=["events stream", "long polls"])
async def scripted_url(request: pytest.FixtureRequest, scripted: ScriptedApi) -> AsyncIterator[str]:
    """The scripted API itself, or behind a proxy that hides its events route (an older API)."""
    if request.param == "events stream":
        yield scripted.url
        return
    async with Proxy(scripted.url, hide_events=True) as older_api:
        yield older_api.url


# Runs served by the worker process.


async def test_run_wait_prints_the_result_and_exits_0(served: ApiProcess) -> None:
    result = await agent_runner(
        "run", "policy-checker", "--user", new_user(), "--wait", url=served.url
    )

    assert result.code == 0, result
    assert result.out in ("approved\n", "rejected\n"), result
    assert "RUNNING attempt 1" in result.err, result
    assert "DONE" in result.err, result


async def test_run_wait_json_is_one_line_per_event_then_the_final_status(
    served: ApiProcess,
) -> None:
    user = new_user()
    result = await agent_runner(
        "run", "document-extractor", "--user", user, "--wait", "--json", url=served.url
    )

    assert result.code == 0, result
    *events, final = result.json_lines()
    assert [event["event"] for event in events][-1] == "done"
    assert "running" in [event["event"] for event in events]
    assert {event["data"]["run_id"] for event in events} == {final["run_id"]}
    assert final["state"] == "DONE"
    assert final["result"]["fields"]["policy_holder"] == user


async def test_run_prints_the_run_id_and_status_shows_and_follows_it(served: ApiProcess) -> None:
    started = await agent_runner("run", "policy-checker", "--user", new_user(), url=served.url)
    assert started.code == 0, started
    run_id = started.out.strip()
    assert f"agent-runner status {run_id} --wait" in started.err

    as_json = await agent_runner("status", run_id, "--json", url=served.url)
    followed = await agent_runner("status", run_id, "--wait", url=served.url)
    shown = await agent_runner("status", run_id, url=served.url)

    assert as_json.code == 0, as_json
    assert as_json.json()["run_id"] == run_id
    assert followed.code == 0, followed
    assert followed.out in ("approved\n", "rejected\n"), followed
    assert shown.code == 0, shown
    assert run_id in shown.out
    assert "DONE" in shown.out
    assert f"result    {followed.out.strip()}" in shown.out


async def test_runs_lists_filters_and_follows_pages(served: ApiProcess) -> None:
    user = new_user()
    run_ids = []
    for _ in range(2):
        run = await agent_runner(
            "run", "policy-checker", "--user", user, "--wait", "--json", url=served.url
        )
        assert run.code == 0, run
        run_ids.append(run.json_lines()[-1]["run_id"])

    async def both_listed() -> None:
        listed = await agent_runner(
            "runs", "--user", user, "--limit", "1", "--all", "--json", url=served.url
        )
        assert listed.code == 0, listed
        assert [run["run_id"] for run in listed.json()["runs"]] == run_ids[::-1]

    await assert_eventually(both_listed, timeout=60)
    one_page = await agent_runner("runs", "--user", user, "--limit", "1", "--json", url=served.url)
    table = await agent_runner("runs", "--user", user, "--state", "done", url=served.url)
    assert one_page.json()["next_page_token"], one_page
    assert table.code == 0, table
    assert all(run_id in table.out for run_id in run_ids), table
    assert table.out.count("DONE") == 2, table


async def test_types_lists_each_agent_with_its_workers(served: ApiProcess) -> None:
    as_json = await agent_runner("types", "--json", url=served.url)
    table = await agent_runner("types", url=served.url)

    assert as_json.code == 0, as_json
    names = [agent["name"] for agent in as_json.json()["agents"]]
    assert names == ["document-extractor", "policy-checker"]
    assert table.code == 0, table
    assert "policy-checker" in table.out
    assert "WORKERS" in table.out


# Mistakes and failures: a message, an exit code, no traceback.


async def test_an_unknown_agent_type_is_the_apis_400(served: ApiProcess) -> None:
    result = await agent_runner("run", "claims-bot", "--user", new_user(), url=served.url)

    assert result.code == EXIT_USAGE, result
    clean(result)
    assert "Unsupported agent_type: 'claims-bot'" in result.err


async def test_params_that_do_not_fit_are_named_field_by_field(served: ApiProcess) -> None:
    result = await agent_runner(
        "run", "policy-checker", "--user", new_user(), "-p", "document=x.pdf", url=served.url
    )

    assert result.code == EXIT_USAGE, result
    clean(result)
    assert "error: params.document: Extra inputs are not permitted" in result.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "policy-checker", "--user", "bob"], "Invalid value for '--user'"),
        (["run", "policy-checker", "--user", "-"], "Invalid value for '--user'"),
        (["run", "policy-checker"], "Missing option '--user'"),
        (
            ["run", "policy-checker", "--user", str(uuid.UUID(int=1)), "--params-json", "[1]"],
            "must be a JSON object",
        ),
        (["run", "policy-checker", "--user", str(uuid.UUID(int=1)), "-p", "x"], "not key=value"),
        (["runs", "--state", "LOST"], "Invalid value for '--state'"),
        (["runs", "--limit", "0"], "Invalid value for '--limit'"),
        (["status"], "Missing argument"),
        # Failed before: tracebacks (exit 1, as if a run had failed).
        (["run", "x", "--user", str(uuid.UUID(int=1)), "-p", "n=1e999"], "out of range"),
        (
            ["run", "x", "--user", str(uuid.UUID(int=1)), "--idempotency-key", "clé"],
            "cannot send that",
        ),
        (["runs", "--url", "http://[::1"], "cannot send that"),
        # Failed before: tracebacks (exit 1), when the body was written.
        (["run", "x", "--user", SOME_USER, "--params-json", '{"a": 1e400}'], "out of range"),
        (["run", "x", "--user", SOME_USER, "--params-json", '{"a": [{"b": -1e400}]}'], "range"),
        (["run", "x", "--user", SOME_USER, "-p", "n=[1e999]"], "out of range"),
        (["run", "x", "--user", SOME_USER, "--params-json", DEEP_JSON], "nested too deeply"),
        (["run", "x", "--user", SOME_USER, "--params-json", f'{{"a": {DEEP_JSON}}}'], "nested"),
        (["run", "x", "--user", SOME_USER, "-p", f"n={DEEP_JSON}"], "nested too deeply"),
    ],
)
async def test_a_usage_error_is_exit_2_before_any_request(args: list[str], message: str) -> None:
    # Nothing listens at this URL: a usage error must not need the API.
    result = await agent_runner(*args, url=f"http://127.0.0.1:{free_port()}")

    assert result.code == EXIT_USAGE, result
    clean(result)
    assert message in result.err


async def test_a_url_without_scheme_is_a_usage_error() -> None:
    result = await agent_runner("types", url="localhost:8000")

    assert result.code == EXIT_USAGE, result
    clean(result)
    assert "must start with http:// or https://" in result.err


@pytest.mark.parametrize(
    "args",
    [
        ["types"],
        ["runs"],
        ["status", "some-run"],
        ["status", "some-run", "--wait"],
        ["cancel", "some-run"],
        ["run", "policy-checker", "--user", str(uuid.UUID(int=1)), "--wait"],
    ],
)
async def test_an_unreachable_api_is_named_with_its_url(args: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = await agent_runner(*args, url=url)

    assert result.code == EXIT_UNAVAILABLE, result
    clean(result)
    assert f"cannot reach the agent-runner API at {url}: " in result.err
    assert "is it running? set AGENT_RUNNER_URL" in result.err
    lines = result.err.strip().splitlines()
    if args[0] == "run":
        # A start whose answer was lost may have happened: the key to retry it safely.
        assert "retry with --idempotency-key cli-" in lines.pop(), result
    assert len(lines) == 1, result


@pytest.mark.parametrize(
    "args", [["status", "no-such-run"], ["status", "no-such-run", "--wait"], ["cancel", "nope"]]
)
async def test_an_unknown_run_is_exit_5(served: ApiProcess, args: list[str]) -> None:
    result = await agent_runner(*args, url=served.url)

    assert result.code == EXIT_NOT_FOUND, result
    clean(result)
    assert f"error: no run {args[1]} at {served.url}" in result.err


async def test_a_missing_or_wrong_api_key_is_exit_6(scripted: ScriptedApi) -> None:
    missing = await agent_runner("runs", url=scripted.url)
    wrong = await agent_runner("types", url=scripted.url, api_key="not-the-key")
    by_option = await agent_runner("types", "--api-key", API_KEY, url=scripted.url)

    assert missing.code == EXIT_AUTH, missing
    clean(missing)
    assert "requires an API key: set AGENT_RUNNER_API_KEY" in missing.err
    assert wrong.code == EXIT_AUTH, wrong
    clean(wrong)
    assert "refused the API key" in wrong.err
    assert by_option.code == 0, by_option


@pytest.mark.parametrize(
    "sent",
    [f"{API_KEY}\n", f"{API_KEY} ", f" {API_KEY}\r\n", f"\t{API_KEY}"],
    ids=["newline", "space", "crlf", "tab"],
)
async def test_whitespace_around_the_api_key_is_not_part_of_it(
    scripted: ScriptedApi, sent: str
) -> None:
    """Failed before: "cannot reach the API" (exit 3), with the key written out on stderr."""
    by_environment = await agent_runner("types", url=scripted.url, api_key=sent)
    by_option = await agent_runner("types", "--api-key", sent, url=scripted.url)

    for result in (by_environment, by_option):
        assert result.code == 0, result
        assert API_KEY not in result.err, result


@pytest.mark.parametrize(
    "sent",
    [f"{API_KEY[:4]}\x01{API_KEY[4:]}", f"{API_KEY[:4]}\n{API_KEY[4:]}", f"{API_KEY}é"],
    ids=["control", "line-break", "not-ascii"],
)
async def test_an_api_key_that_cannot_be_sent_is_a_usage_error_never_echoed(sent: str) -> None:
    result = await agent_runner("types", url=f"http://127.0.0.1:{free_port()}", api_key=sent)

    assert result.code == EXIT_USAGE, result
    clean(result)
    assert "AGENT_RUNNER_API_KEY" in result.err
    assert API_KEY[4:] not in result.err, result
    assert len(result.err.strip().splitlines()) == 1, result


@pytest.mark.parametrize("moment", ["importing", "connecting"])
async def test_ctrl_c_during_start_up_is_130_with_one_line(moment: str) -> None:
    """Failed before, while Python imported the command line: a KeyboardInterrupt traceback."""
    # An API that takes the connection and never answers.
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(COMMAND_TIMEOUT)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    args = ["run", "policy-checker", "--user", SOME_USER, "--wait"]
    taken: list[socket.socket] = []
    try:
        if moment == "importing":
            # Python writes a line per module imported: interrupt once the heavy ones begin.
            command = await CliProcess.start(*args, url=url, env={"PYTHONPROFILEIMPORTTIME": "1"})
            await command.line(lambda line: "import time:" in line and "httpx" in line)
        else:
            command = await CliProcess.start(*args, url=url)
            taken.append((await asyncio.to_thread(listener.accept))[0])
        command.interrupt()
        result = await command.finish()
    finally:
        for connection in (*taken, listener):
            connection.close()

    assert result.code == EXIT_INTERRUPTED, result
    clean(result)
    said = [line for line in result.err.splitlines() if not line.startswith("import time:")]
    assert said == ["interrupted"], result


# Runs the test drives.


async def test_run_wait_shows_progress_and_each_failed_attempt_then_exits_1(
    scripted: ScriptedApi, scripted_url: str
) -> None:
    user = new_user()
    following = await scripted.start(
        "run", "policy-checker", "--user", user, "--wait", url=scripted_url
    )

    await following.line(lambda line: "50% scanning the policy" in line)
    scripted.agent.then(user, "fail")
    failed = await following.line(lambda line: "attempt 1 failed" in line)
    await following.line(lambda line: "RUNNING attempt 2" in line)
    scripted.agent.then(user, "fail")
    result = await following.finish()

    assert "RuntimeError: scanner offline (attempt 1) (retrying)" in failed
    assert result.code == EXIT_RUN_FAILED, result
    clean(result)
    assert result.out == ""
    assert result.err.strip().endswith("ended ERROR: RuntimeError: scanner offline (attempt 2)"), (
        result
    )


async def test_busy_is_409_with_the_running_run_and_enqueue_waits_its_turn(
    scripted: ScriptedApi,
) -> None:
    user = new_user()
    first = await scripted.cli("run", "policy-checker", "--user", user)
    first_id = first.out.strip()

    refused = await scripted.cli("run", "policy-checker", "--user", user)
    queued = await scripted.cli("run", "policy-checker", "--user", user, "--enqueue", "--json")
    scripted.agent.then(user, "succeed", "succeed")
    followed = await scripted.cli("status", queued.json()["run_id"], "--wait")

    assert first.code == 0, first
    assert refused.code == EXIT_CONFLICT, refused
    clean(refused)
    assert "An agent is already running" in refused.err
    assert f"running: {first_id}" in refused.err
    assert "retry after " in refused.err
    assert "add --enqueue to wait in the queue" in refused.err
    assert queued.code == 0, queued
    assert queued.json()["queue_position"] == 1
    assert followed.code == 0, followed
    assert followed.out == "approved\n"
    assert (await scripted.status(first_id))["state"] == "DONE"


async def test_priority_and_attach_from_the_command_line(scripted: ScriptedApi) -> None:
    user = new_user()
    first = await scripted.cli("run", "policy-checker", "--user", user)
    first_id = first.out.strip()
    low = await scripted.cli("run", "policy-checker", "--user", user, "--enqueue", "--json")
    urgent = await scripted.cli(
        "run", "policy-checker", "--user", user, "--on-busy", "enqueue", "--priority", "1",
        "--queue-timeout", "600", "--json",
    )  # fmt: skip
    attached = await scripted.cli("run", "policy-checker", "--user", user, "--on-busy", "attach")
    bad = await scripted.cli("run", "policy-checker", "--user", user, "--priority", "9")

    assert first.code == 0, first
    assert (urgent.code, urgent.json()["queue_position"]) == (0, 1), urgent
    assert (await scripted.status(low.json()["run_id"]))["queue_position"] == 2
    assert attached.code == 0, attached
    assert attached.out.strip() == first_id
    assert "attached" in attached.err
    assert bad.code == EXIT_USAGE, bad
    clean(bad)
    for run_id in (first_id, urgent.json()["run_id"], low.json()["run_id"]):
        scripted.agent.then(user, "succeed")
        followed = await scripted.cli("status", run_id, "--wait")
        assert followed.code == 0, followed


async def test_ctrl_c_stops_following_and_the_run_goes_on(scripted: ScriptedApi) -> None:
    user = new_user()
    following = await scripted.start("run", "policy-checker", "--user", user, "--wait")
    running = await following.line(lambda line: "RUNNING attempt 1 of run " in line)
    run_id = running.split("of run ")[1].strip()
    await following.line(lambda line: "50% scanning the policy" in line)

    following.interrupt()
    result = await following.finish()

    assert result.code == EXIT_INTERRUPTED, result
    clean(result)
    assert f"stopped following run {run_id}; the run goes on" in result.err
    assert f"agent-runner cancel {run_id}" in result.err
    assert (await scripted.status(run_id))["state"] == "RUNNING"
    scripted.agent.then(user, "succeed")
    finished = await scripted.cli("status", run_id, "--wait")
    assert finished.code == 0, finished


async def test_cancel_ends_a_running_run_and_a_finished_run_is_409(scripted: ScriptedApi) -> None:
    started = await scripted.cli("run", "policy-checker", "--user", new_user())
    run_id = started.out.strip()

    async def running() -> None:
        assert (await scripted.status(run_id))["progress"] is not None

    await assert_eventually(running, timeout=60)
    cancelled = await scripted.cli("cancel", run_id)
    followed = await scripted.cli("status", run_id, "--wait", "--json")
    again = await scripted.cli("cancel", run_id, "--json")

    assert cancelled.code == 0, cancelled
    # Ended within the API's few seconds of waiting, or (a starved machine) still stopping.
    assert cancelled.out in (
        f"run {run_id} cancelled: it ended ERROR\n",
        f"cancel requested; run {run_id} is RUNNING while its agent stops\n",
    ), cancelled
    assert again.code == EXIT_CONFLICT, again
    clean(again)
    assert f"cannot cancel run {run_id}: The run has already finished" in again.err
    assert followed.code == EXIT_RUN_FAILED, followed
    assert followed.json_lines()[-1]["error"] == "cancelled"
    assert f"run {run_id} ended ERROR: cancelled" in followed.err


async def test_cancel_answers_202_while_the_agent_has_not_stopped(scripted: ScriptedApi) -> None:
    user = new_user()
    scripted.agent.stubborn.add(user)
    started = await scripted.cli("run", "policy-checker", "--user", user)
    run_id = started.out.strip()

    async def running() -> None:
        assert (await scripted.status(run_id))["progress"] is not None

    await assert_eventually(running, timeout=60)
    requested = await scripted.cli("cancel", run_id)
    scripted.agent.then(user, "succeed")
    followed = await scripted.cli("status", run_id, "--wait", "--json")

    assert requested.code == 0, requested
    assert requested.out.startswith(f"cancel requested; run {run_id} is "), requested
    assert requested.out.endswith(" while its agent stops\n"), requested
    assert f"agent-runner status {run_id} --wait" in requested.err
    assert followed.code == EXIT_RUN_FAILED, followed
    assert followed.json_lines()[-1]["error"] == "cancelled"


# Following a run without the events stream, and across a dropped one.


async def test_an_api_without_the_events_route_is_followed_by_long_polls(
    served: ApiProcess,
) -> None:
    async with Proxy(served.url, hide_events=True) as older_api:
        result = await agent_runner(
            "run", "policy-checker", "--user", new_user(), "--wait", url=older_api.url
        )

    assert result.code == 0, result
    assert result.out in ("approved\n", "rejected\n"), result
    assert [seen.status for seen in older_api.requests_to("/events")] == [404]
    assert any("wait=" in seen.query for seen in older_api.requests_to(result_run(older_api)))


def result_run(proxy: Proxy) -> str:
    """The status path the follower polled (the run's only one)."""
    [path] = {seen.path for seen in proxy.forwarded if seen.path.startswith("/agents/status/")}
    return path


async def events_route_exists(api: ApiProcess) -> bool:
    async with httpx.AsyncClient(base_url=api.url) as http:
        started = await http.post(
            "/agents/run", json={"agent_type": "policy-checker", "user_id": new_user()}
        )
        assert started.status_code == 202, started.text
        run_id = started.json()["run_id"]
        response = await http.get(f"/agents/status/{run_id}", params={"wait": 30})
        while response.json()["state"] not in ("DONE", "ERROR"):
            response = await http.get(f"/agents/status/{run_id}", params={"wait": 30})
        async with http.stream("GET", f"/agents/runs/{run_id}/events") as events:
            return events.status_code != 404


async def test_a_dropped_events_stream_is_resumed_after_the_last_event(
    served: ApiProcess,
) -> None:
    if not await events_route_exists(served):
        pytest.skip("this API has no events stream yet (GET /agents/runs/{run_id}/events)")
    async with Proxy(served.url, drop_stream_after=2) as flaky_network:
        result = await agent_runner(
            "run",
            "document-extractor",
            "--user",
            new_user(),
            "--wait",
            "--json",
            url=flaky_network.url,
        )

    assert result.code == 0, result
    *events, final = result.json_lines()
    assert final["state"] == "DONE"
    assert events[-1]["event"] == "done"
    first, resumed, *_ = flaky_network.requests_to("/events")
    assert first.last_event_id is None
    assert resumed.last_event_id, "the second connection resumes after the last event"
    assert not [seen for seen in flaky_network.forwarded if "wait=" in seen.query]


async def test_following_goes_on_across_an_api_restart(
    scripted: ScriptedApi, tmp_path: Path
) -> None:
    replica_settings = scripted.settings.model_copy(update={"api_port": free_port()})
    replica = await start_api(replica_settings, tmp_path / "replica.log")
    user = new_user()
    try:
        following = await scripted.start(
            "run", "policy-checker", "--user", user, "--wait", url=replica.url
        )
        await following.line(lambda line: "50% scanning the policy" in line)
        replica.process.kill()
        replica = await start_api(replica_settings, tmp_path / "replica.log")
        scripted.agent.then(user, "succeed")
        result = await following.finish()
    finally:
        replica.process.stop()

    assert result.code == 0, result
    assert result.out == "approved\n"


# For people at a terminal, and for whatever is not the API.


async def test_on_a_terminal_a_run_is_followed_with_a_live_progress_bar(
    scripted: ScriptedApi,
) -> None:
    user = new_user()
    screen = Terminal()
    following = await CliProcess.start(
        "run",
        "policy-checker",
        "--user",
        user,
        "--wait",
        url=scripted.url,
        api_key=API_KEY,
        stderr=screen.fd,
    )
    screen.close_child_end()
    await screen.shows("scanning the policy")
    await screen.shows("50%")
    scripted.agent.then(user, "succeed")
    result = await following.finish()
    shown = await screen.rest()

    assert result.code == 0, result
    assert result.out == "approved\n"
    assert "━" in shown, "a progress bar"
    assert "DONE" in shown
    assert "Traceback" not in shown


async def test_a_server_that_is_not_the_api_is_named(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        listed = await agent_runner("types", url=url)
        followed = await agent_runner("status", "some-run", "--wait", url=url)
    finally:
        server.shutdown()
        server.server_close()

    for result in (listed, followed):
        assert result.code == EXIT_UNAVAILABLE, result
        clean(result)
        assert f"unexpected answer from {url}" in result.err
        assert "is AGENT_RUNNER_URL the agent-runner API?" in result.err


async def test_limits_are_shown_and_changed_by_an_api_keys_id(scripted: ScriptedApi) -> None:
    shown = await scripted.cli("limits", "--json")
    assert shown.code == 0, shown
    assert (shown.json()["scope_kind"], shown.json()["slots"]) == ("user_id", 1)
    try:
        changed = await scripted.cli("limits", "set", "--slots", "2", "--json")
        assert changed.code == 0, changed
        assert changed.json()["slots"] == 2
        assert changed.json()["changed_by"].startswith("key-")
        assert API_KEY not in changed.out
        table = await scripted.cli("limits")
        assert "slots (N)" in table.out
        fair = await scripted.cli(
            "limits", "set", "--fair-shares", "--weight", "batch=3", "--aging-seconds", "60",
            "--json",
        )  # fmt: skip
        assert fair.code == 0, fair
        assert (fair.json()["fair_shares"], fair.json()["weights"]) == (True, {"batch": 3})
        assert fair.json()["aging_seconds"] == 60
    finally:
        restored = await scripted.cli(
            "limits", "set", "--slots", "1", "--no-fair-shares", "--aging-seconds", "600",
        )  # fmt: skip
        assert restored.code == 0, restored
    user = new_user()
    paused = await scripted.cli("pause", user, "--json")
    assert (paused.code, paused.json()["scope"], paused.json()["paused"]) == (0, user, True)
    own = await scripted.cli("limits", "set", "--scope", user, "--slots", "2", "--json")
    assert (own.code, own.json()["slots"], own.json()["own"]["slots"]) == (0, 2, 2), own
    shown = await scripted.cli("limits", "--scope", user)
    assert "paused" in shown.out, shown
    assert "True" in shown.out, shown
    resumed = await scripted.cli("resume", user, "--json")
    assert (resumed.code, resumed.json()["paused"]) == (0, False), resumed
    not_a_scope = await scripted.cli("pause", "global")
    assert not_a_scope.code == EXIT_USAGE, not_a_scope
    clean(not_a_scope)
    weightless = await scripted.cli("limits", "set", "--weight", "batch")
    assert weightless.code == EXIT_USAGE, weightless
    clean(weightless)
    nothing = await scripted.cli("limits", "set")
    assert nothing.code == EXIT_USAGE, nothing
    clean(nothing)
    zero = await scripted.cli("limits", "set", "--slots", "0")
    assert zero.code == EXIT_USAGE, zero
    clean(zero)


def test_a_poll_that_sees_a_new_state_and_progress_at_once_tells_both() -> None:
    """Failed before (a hang in CI): following by long polls, the first RUNNING status already
    carried the agent's progress; only `running` was printed, and whoever waited for the
    progress line waited for ever."""
    base = {"run_id": "r", "agent_type": "a", "user_id": "u", "attempt": 1}
    pending = RunStatus.of({**base, "state": "PENDING", "waiting_for": "worker"})
    progress = {"fraction": 0.5, "message": "scanning the policy", "attempt": 1}
    running = RunStatus.of({**base, "state": "RUNNING", "progress": progress})

    assert transitions(pending, running) == ["running", "progress"]
    assert transitions(None, running) == ["running", "progress"]
