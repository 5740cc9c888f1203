"""The status stream (Server-Sent Events) of a run, from a real API process against the
session's real Temporal server, with a real worker in the test process."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from agent_runner.agents import Agent, AgentContext, NoParams
from agent_runner.runs.follow import event_order
from agent_runner.settings import Settings
from devtools.processes import free_port
from tests.helpers import (
    USER_ID,
    LoggedProcess,
    assert_eventually,
    coordinating_worker,
    in_process_worker,
    make_settings,
    start_run,
    wait_http,
)

STREAM_TIMEOUT = httpx.Timeout(60.0, connect=10.0)


class FailsOnceWithProgress(Agent[NoParams]):
    """Reports progress, fails its first attempt, then reports progress and succeeds. Each
    step waits until the test lets it go on, so no report is merged with another."""

    name = "policy-checker"

    def __init__(self) -> None:
        self.go_on = asyncio.Event()

    async def run(self, ctx: AgentContext, params: NoParams) -> str:
        await ctx.report_progress(0.25, f"reading (attempt {ctx.attempt})")
        await asyncio.sleep(0.6)
        await ctx.report_progress(0.5, f"checking (attempt {ctx.attempt})")
        await asyncio.sleep(0.6)
        if ctx.attempt == 1:
            raise RuntimeError("scanner offline")
        return "approved"


@dataclass
class Event:
    id: str
    name: str
    data: dict[str, Any]


async def read_events(
    http: httpx.AsyncClient, run_id: str, last_event_id: str | None = None, limit: int = 1000
) -> list[Event]:
    """The stream's events until the server closes it (or ``limit`` events)."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    events: list[Event] = []
    async with http.stream(
        "GET", f"/agents/runs/{run_id}/events", headers=headers, timeout=STREAM_TIMEOUT
    ) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for event in parse(response.aiter_lines()):
            events.append(event)
            if len(events) >= limit:
                break
    return events


async def parse(lines: AsyncIterator[str]) -> AsyncIterator[Event]:
    fields: dict[str, str] = {}
    async for line in lines:
        if line == "":
            if "data" in fields:
                yield Event(fields["id"], fields["event"], json.loads(fields["data"]))
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value


@pytest.fixture
def stream_settings(temporal_address: str) -> Settings:
    # These tests are about streams, not leases: a lease lost on a starved machine (a short
    # heartbeat timeout) would add a retry's events to the steps they compare.
    return make_settings(
        temporal_address,
        task_queue=f"events-{uuid.uuid4()}",
        api_port=free_port(),
        agent_heartbeat_timeout_seconds=10.0,
    )


@pytest.fixture
def api_process(stream_settings: Settings, tmp_path: Path) -> Iterator[LoggedProcess]:
    process = LoggedProcess.api(stream_settings, tmp_path / "api.log")
    yield process
    process.stop()


@pytest.fixture
async def http(
    temporal_client: Client, stream_settings: Settings, api_process: LoggedProcess
) -> AsyncIterator[httpx.AsyncClient]:
    base = f"http://127.0.0.1:{stream_settings.api_port}"
    await wait_http(f"{base}/healthz")
    async with (
        coordinating_worker(stream_settings),
        httpx.AsyncClient(base_url=base, timeout=15.0) as client,
    ):
        yield client


async def test_a_stream_sees_every_state_of_a_run_in_order_across_a_retry(
    temporal_client: Client, stream_settings: Settings, http: httpx.AsyncClient
) -> None:
    run_id = await start_run(http)
    # No worker yet: the stream starts with the run waiting for one.
    full = asyncio.ensure_future(read_events(http, run_id))
    await asyncio.sleep(0.5)
    async with in_process_worker(temporal_client, stream_settings, [FailsOnceWithProgress()]):
        events = await asyncio.wait_for(full, 60)

    names = [event.name for event in events]
    assert names[0] == "pending"
    assert names[-1] == "done"
    steps = [
        (e.name, e.data["attempt"], (e.data["progress"] or {}).get("message"))
        for e in events
        if e.name in ("running", "progress", "attempt_failed", "done")
    ]
    assert steps == [
        ("running", 1, None),
        ("progress", 1, "reading (attempt 1)"),
        ("progress", 1, "checking (attempt 1)"),
        ("attempt_failed", 1, None),
        ("running", 2, None),
        ("progress", 2, "reading (attempt 2)"),
        ("progress", 2, "checking (attempt 2)"),
        ("done", 2, None),
    ]
    failed = next(e for e in events if e.name == "attempt_failed")
    assert failed.data["last_failure"] == {
        "attempt": 1,
        "reason": "RuntimeError: scanner offline",
        "retrying": True,
    }
    assert failed.data["state"] == "RUNNING"
    assert events[-1].data["result"] == "approved"
    assert [event.data["state"] for event in events] == sorted(
        (event.data["state"] for event in events), key=["PENDING", "RUNNING", "DONE"].index
    )
    # Queue events (q<version>) come first, then the execution's; each id once, in order.
    ids = [event_order(event.id) for event in events]
    assert None not in ids
    assert ids == sorted(set(ids)), "ids grow, none twice"  # type: ignore[type-var]


async def test_a_resumed_stream_continues_from_last_event_id_without_repeats_or_gaps(
    temporal_client: Client, stream_settings: Settings, http: httpx.AsyncClient
) -> None:
    run_id = await start_run(http)
    whole = asyncio.ensure_future(read_events(http, run_id))
    first_part = asyncio.ensure_future(read_events(http, run_id, limit=1))
    await asyncio.sleep(0.5)
    async with in_process_worker(temporal_client, stream_settings, [FailsOnceWithProgress()]):
        [last_seen] = await asyncio.wait_for(first_part, 60)
        # Disconnected after the first event: resume, as EventSource does, with its id.
        rest = await asyncio.wait_for(read_events(http, run_id, last_seen.id), 60)
        everything = await asyncio.wait_for(whole, 60)

    assert [e.id for e in [last_seen, *rest]] == [e.id for e in everything]
    assert [e.data for e in [last_seen, *rest]] == [e.data for e in everything]
    # Resuming after the end: 204, which tells an EventSource to stop reconnecting (a 200 that
    # ended at once, as before, made it reconnect every second for ever).
    again = await http.get(
        f"/agents/runs/{run_id}/events", headers={"Last-Event-ID": everything[-1].id}
    )
    assert again.status_code == 204, again.text
    assert again.content == b""
    # Resuming from an earlier event still gets what came after it.
    [*_, end] = await asyncio.wait_for(read_events(http, run_id, everything[-2].id), 30)
    assert end.id == everything[-1].id
    # A new subscriber to a finished run gets its final status, then the end.
    [final] = await asyncio.wait_for(read_events(http, run_id), 30)
    assert final.name == "done"


async def test_a_waiting_runs_position_may_rise_and_a_resumed_stream_still_follows(
    http: httpx.AsyncClient,
) -> None:
    """Priorities (issue 21): a run queued later with a higher priority moves a waiting run
    back; its stream says so with a later id, and Last-Event-ID resumes after it."""
    await start_run(http)  # holds the slot: no worker has its agent, it stays PENDING
    waiting = await start_run(http, on_busy="enqueue")
    first_two = asyncio.ensure_future(read_events(http, waiting, limit=2))

    async def streaming() -> None:
        assert (await http.get(f"/agents/status/{waiting}")).json()["queue_position"] == 1

    await assert_eventually(streaming)
    await asyncio.sleep(0.5)  # the stream's first event is out before the queue changes
    urgent = await http.post(
        "/agents/run",
        json={"agent_type": "policy-checker", "user_id": USER_ID, "on_busy": "enqueue",
              "priority": 1},
    )  # fmt: skip
    assert urgent.json()["queue_position"] == 1, urgent.text
    queued, moved = await asyncio.wait_for(first_two, 60)
    assert (queued.name, queued.data["queue_position"]) == ("queued", 1)
    assert (moved.name, moved.data["queue_position"]) == ("queued", 2)
    assert event_order(moved.id) > event_order(queued.id)  # type: ignore[operator]

    rest = asyncio.ensure_future(read_events(http, waiting, moved.id))
    cancelled = await http.post(f"/agents/runs/{waiting}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    [end] = await asyncio.wait_for(rest, 60)
    assert (end.name, end.data["error"]) == ("error", "cancelled")


async def test_an_unknown_run_is_404_before_any_stream(http: httpx.AsyncClient) -> None:
    for run_id in ("no-such-run", *(str(uuid.uuid4()) for _ in range(20))):
        response = await http.get(f"/agents/runs/{run_id}/events")
        assert response.status_code == 404
        assert response.json() == {"detail": "No run with this run_id"}

    async def nothing_watched() -> None:
        text = (await http.get("/metrics")).text
        [line] = [line for line in text.splitlines() if line.startswith("agent_runner_watched")]
        assert float(line.rsplit(" ", 1)[1]) == 0, "made-up run ids are not kept"

    await assert_eventually(nothing_watched, timeout=10)


async def test_a_hundred_subscribers_see_the_same_events_for_one_set_of_temporal_calls(
    temporal_client: Client, stream_settings: Settings, http: httpx.AsyncClient
) -> None:
    streams_client = httpx.AsyncClient(
        base_url=http.base_url, limits=httpx.Limits(max_connections=200)
    )

    async def one_run(subscribers: int) -> tuple[list[list[Event]], float]:
        run_id = await start_run(http)
        # Every subscriber joins once its agent waits for a worker, so one subscriber and a
        # hundred see the same events (one that joined sooner would also see the moment before
        # the attempt was scheduled, a PENDING of its own).
        await assert_eventually(lambda: waits_for_a_worker(http, run_id), timeout=30)
        before = await temporal_requests(http)
        streams = [
            asyncio.ensure_future(read_events(streams_client, run_id)) for _ in range(subscribers)
        ]
        await assert_eventually(lambda: watching(http, run_id, subscribers), timeout=30)
        async with in_process_worker(temporal_client, stream_settings, [FailsOnceWithProgress()]):
            seen = await asyncio.wait_for(asyncio.gather(*streams), 90)
        return seen, await temporal_requests(http) - before

    async with streams_client:
        [alone], calls_alone = await one_run(1)
        seen, calls_for_hundred = await one_run(100)

    assert all(
        [(e.id, e.data) for e in events] == [(e.id, e.data) for e in seen[0]] for events in seen
    )
    assert [e.name for e in seen[0]] == [e.name for e in alone]
    # One set of calls whether one or a hundred follow the run: a watcher per subscriber would
    # make at least a hundred. The count itself varies from run to run, as the long polls'
    # answers batch events differently (19 alone and 26 for a hundred on a slow CI machine).
    assert calls_for_hundred <= min(2 * calls_alone + 5, 99), (calls_alone, calls_for_hundred)


async def temporal_requests(http: httpx.AsyncClient) -> float:
    text = (await http.get("/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("agent_runner_temporal_requests_total{")
    )


async def waits_for_a_worker(http: httpx.AsyncClient, run_id: str) -> None:
    body = (await http.get(f"/agents/status/{run_id}")).json()
    assert (body["state"], body.get("waiting_for")) == ("PENDING", "worker"), body


async def watching(http: httpx.AsyncClient, run_id: str, subscribers: int) -> None:
    text = (await http.get("/metrics")).text
    [line] = [line for line in text.splitlines() if line.startswith("agent_runner_stream_subs")]
    assert float(line.rsplit(" ", 1)[1]) >= subscribers


class Held(Agent[NoParams]):
    """Reports one honest progress, then works until the test lets it finish."""

    name = "policy-checker"

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def run(self, ctx: AgentContext, params: NoParams) -> str:
        await ctx.report_progress(0.5, "half way")
        await self.release.wait()
        return "approved"


async def test_a_forged_progress_report_is_not_shown_and_the_stream_still_ends(
    temporal_client: Client, stream_settings: Settings, http: httpx.AsyncClient
) -> None:
    """Anyone can signal a run: a progress no agent could send (fraction 7.5, a huge message)
    used to make every reader of the run fail its response model, so a stream never ended."""
    agent = Held()
    async with in_process_worker(temporal_client, stream_settings, [agent]):
        run_id = await start_run(http)

        async def half_way() -> dict[str, Any]:
            body: dict[str, Any] = (await http.get(f"/agents/status/{run_id}")).json()
            assert (body.get("progress") or {}).get("message") == "half way", body
            return body

        status = await assert_eventually(half_way, timeout=60)
        run = temporal_client.get_workflow_handle(status["workflow_id"])
        for forged in (
            {"attempt": 1, "fraction": 7.5, "message": "x"},
            {"attempt": 1, "fraction": 0.9, "message": "y" * 5000},
        ):
            await run.signal("progress", forged)
        stream = asyncio.ensure_future(read_events(http, run_id))
        await asyncio.sleep(1.0)
        agent.release.set()
        events = await asyncio.wait_for(stream, 60)

    assert events[-1].name == "done", [event.name for event in events]
    shown = [event.data["progress"] for event in events if event.data.get("progress")]
    assert all(progress["message"] == "half way" for progress in shown), shown
    assert (await http.get(f"/agents/status/{run_id}")).json()["state"] == "DONE"


# Last-Event-ID values no stream sends: a sign, a leading zero, more digits than an event id has,
# not a number.
MALFORMED_EVENT_IDS = ["+35", "1" + "0" * 30, "035", "-1", "q", "q+1", "abc", "35.0"]


async def test_a_last_event_id_the_stream_never_sent_gets_an_answer_never_an_empty_stream(
    temporal_client: Client, stream_settings: Settings, http: httpx.AsyncClient
) -> None:
    """Scale issue, finding 7: on a finished run these got an empty 200 stream, which an
    EventSource reconnects to every second for ever."""
    run_id = await start_run(http)
    async with in_process_worker(temporal_client, stream_settings, [FailsOnceWithProgress()]):
        everything = await asyncio.wait_for(read_events(http, run_id), 60)
    final = everything[-1]
    assert final.name == "done"

    for malformed in MALFORMED_EVENT_IDS:
        answer = await http.get(
            f"/agents/runs/{run_id}/events", headers={"Last-Event-ID": malformed}
        )
        assert answer.status_code == 422, (malformed, answer.text)
        [problem] = answer.json()["detail"]
        assert problem["loc"] == ["header", "last-event-id"]
    # Past the end: the run's final event again (an EventSource then sends its id: 204).
    past = str(int(final.id) + 1000)
    [again] = await asyncio.wait_for(read_events(http, run_id, past), 30)
    assert (again.id, again.name, again.data) == (final.id, final.name, final.data)
    # Space around an id is not part of it.
    port = stream_settings.api_port
    assert await asyncio.to_thread(raw_get, port, run_id, f" {final.id} ") == (204, b"")
    status, body = await asyncio.to_thread(raw_get, port, run_id, f"{past} ")
    assert status == 200
    assert body.count(b"event: done") == 1


async def test_an_id_past_the_end_of_an_open_run_hides_nothing(
    temporal_client: Client, stream_settings: Settings, http: httpx.AsyncClient
) -> None:
    """Failed before: no event until the next change (the run's status then was hidden)."""
    run_id = await start_run(http)
    [pending] = await asyncio.wait_for(read_events(http, run_id, limit=1), 30)
    assert pending.name == "pending"  # no worker has its agent yet
    # Its id is the queue's (q<version>) or the execution's, whichever the stream read first.
    order = event_order(pending.id)
    assert order is not None
    past = ("q" if order[0] == 0 else "") + str(order[1] + 1_000_000)
    stream = asyncio.ensure_future(read_events(http, run_id, past))
    await assert_eventually(lambda: watching(http, run_id, 1), timeout=30)
    async with in_process_worker(temporal_client, stream_settings, [FailsOnceWithProgress()]):
        events = await asyncio.wait_for(stream, 60)

    assert events[0].name == "pending"
    assert events[-1].name == "done"
    assert "running" in [event.name for event in events]


def raw_get(port: int, run_id: str, last_event_id: str) -> tuple[int, bytes]:
    """The stream with a Last-Event-ID httpx will not send (space around it), read to its end."""
    connection = HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest("GET", f"/agents/runs/{run_id}/events")
        connection.putheader("Last-Event-ID", last_event_id)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()
