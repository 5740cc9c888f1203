"""The queue holds its promises across replicas, crashes and outages.

Real processes only, in one stack for the module: a Temporal dev server on a db file (told to
suggest continue-as-new after 150 events, so the queue workflow does it often), two API processes
and two worker processes, killed, restarted and reconfigured by pid; terminates come from the
real `temporal` CLI. 1 s agents (3 s where a test must act while one works, 0.2 s for the long
queue), heartbeat timeout 2 s, AGENT_SLOTS=1 except in test 4. Whether agents overlapped is
read from the agents' own log lines (tests/spans.py); every figure is recorded for
docs/RELIABILITY.md (tests/measured.py, keys 20-25), never asserted as a bound.

1. FIFO per scope across both API replicas, and the queue_position each 202 gave.
2. Exactly once: 50 queued runs through a SIGKILL + restart of an API (that had accepted a run
   whose answer the client never read: it retries with its Idempotency-Key), of the worker
   running the current agent, and of the Temporal server.
3. No leaked slot: the next queued run starts however the running one ends (DONE, agent timeout,
   cancel, `temporal workflow terminate`, its worker SIGKILLed).
4. AGENT_SLOTS=2: two agents at once, never three.
5. Bounded history: the queue continues as new, carries what waits, and loses none of it.
6. Never N+1 over the whole module, from every agent attempt any worker logged.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from agent_runner.models import RunPolicy
from temporalio.api.enums.v1 import PendingActivityState, PendingWorkflowTaskState
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from agent_runner.runs import OnBusy, start_request, start_run_detailed
from devtools.processes import temporal_cli
from tests.helpers import USER_ID, LoggedProcess, assert_eventually
from tests.measured import record
from tests.spans import END_EVENTS, Span, overlapping, smallest_gap_seconds
from tests.stack import Stack

pytestmark = pytest.mark.reliability

AGENT_SECONDS = 1.0
# Where a test acts on a working agent (cancel, terminate, kill), it gets this long to do so.
LONG_AGENT_SECONDS = 3.0
# The long queue of test 5: many runs, quickly.
FAST_AGENT_SECONDS = 0.2
HEARTBEAT_TIMEOUT = 2.0
# The dev server suggests continue-as-new after this many events (Temporal's default: 4 Ki).
SUGGEST_CONTINUE_AS_NEW = 150
# No execution's history may grow past this: twice the suggestion. The queue can only continue
# as new between updates, so it may overshoot the suggestion by what arrives meanwhile.
HISTORY_BOUND = 2 * SUGGEST_CONTINUE_AS_NEW
WORKFLOW_ID = "agent-runner"
QUEUE_ID = f"{WORKFLOW_ID}:queue"
AGENT_TYPES = ("policy-checker", "document-extractor")
FINAL = ("DONE", "ERROR")
# The runs of test 4 (AGENT_SLOTS=2), for the module-wide check: every other run had one slot.
TWO_SLOT_RUNS: set[str] = set()
# The 503 answers to POST /agents/run that were retried (with the same Idempotency-Key).
RETRIED_503: list[str] = []


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    stack = Stack(
        tmp_path_factory.mktemp("queue-reliability"),
        {
            "task_queue": "queue-reliability",
            "workflow_id": WORKFLOW_ID,
            "agent_slots": 1,
            "agent_duration_seconds": AGENT_SECONDS,
            "agent_heartbeat_timeout_seconds": HEARTBEAT_TIMEOUT,
            "agent_max_attempts": 3,
            "agent_retry_initial_interval_seconds": 0.2,
            "worker_graceful_shutdown_seconds": 5.0,
            "temporal_rpc_timeout_seconds": 1.5,
        },
        server_args=[
            "--dynamic-config-value",
            f"limit.historyCount.suggestContinueAsNew={SUGGEST_CONTINUE_AS_NEW}",
        ],
    )
    await stack.start(apis=2, workers=2)
    await stack.workers_polling()
    yield stack
    stack.stop_all()


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """A client for the stack's APIs; afterwards, pass or fail, the stack as the next test
    wants it: every process running (restarted if a test killed it), nothing queued or open."""
    async with stack.client() as client:
        yield client
        await stack.heal()
        await settle(stack, client)


async def settle(stack: Stack, http: httpx.AsyncClient) -> None:
    """Cancel whatever still waits or runs, until the queue and the slots are empty; then the
    queue workflow, with nothing to do, must close. One that stays open (test 2's bug) is
    terminated, so that the next test starts from a fresh queue."""
    url = stack.api_url(0)

    async def idle() -> None:
        view = await queue_view(http, url)
        for run in [*view["queued"], *view["running"]]:
            await http.post(f"{url}/agents/runs/{run['run_id']}/cancel")
        assert view == {"running": [], "queued": []}, view

    await assert_eventually(idle, timeout=120, interval=0.5)
    client = await Client.connect(stack.server.address)
    try:
        await assert_eventually(lambda: queue_closed(client), timeout=15, interval=0.2)
    except AssertionError:
        await client.get_workflow_handle(QUEUE_ID).terminate("test cleanup: open, nothing waits")


async def queue_closed(client: Client) -> None:
    """The queue workflow's latest execution is closed (or there never was one)."""
    try:
        description = await client.get_workflow_handle(QUEUE_ID).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return
        raise AssertionError(f"{QUEUE_ID}: {err}") from err
    assert description.status != WorkflowExecutionStatus.RUNNING, (
        f"{QUEUE_ID} run {description.run_id} is still open, its memo: {await description.memo()}"
    )


# --- talking to the APIs -----------------------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    run_id: str
    queue_position: int | None
    sent: datetime
    answered: datetime


def payload(index: int) -> dict[str, str]:
    return {"agent_type": AGENT_TYPES[index % 2], "user_id": USER_ID, "on_busy": "enqueue"}


async def enqueue(
    http: httpx.AsyncClient, url: str, index: int = 0, key: str | None = None
) -> Accepted:
    """POST one run with ``on_busy: enqueue`` and an Idempotency-Key; insist on a 202. A 503
    ("retry later": the queue did not answer within the API's budget, say on a loaded machine)
    is retried with the same key, as a client should; each is counted in RETRIED_503."""
    key = key or f"queue-reliability-{uuid.uuid4()}"
    sent = datetime.now(UTC)
    deadline = time.monotonic() + 60
    while True:
        response = await http.post(
            f"{url}/agents/run", json=payload(index), headers={"Idempotency-Key": key}
        )
        if response.status_code != 503 or time.monotonic() > deadline:
            break
        RETRIED_503.append(response.text)
        await asyncio.sleep(0.2)
    answered = datetime.now(UTC)
    assert response.status_code == 202, (url, response.status_code, response.text)
    body = response.json()
    return Accepted(body["run_id"], body["queue_position"], sent, answered)


async def enqueue_in_turn(stack: Stack, http: httpx.AsyncClient, count: int) -> list[Accepted]:
    """``count`` runs one after the other, alternating the APIs, each after the last 202."""
    return [await enqueue(http, stack.api_url(i % 2), i) for i in range(count)]


async def status(http: httpx.AsyncClient, url: str, run_id: str) -> dict[str, Any]:
    try:
        response = await http.get(f"{url}/agents/status/{run_id}")
    except httpx.TransportError as err:  # a process being restarted: ask again
        raise AssertionError(f"{url}: {err!r}") from err
    assert response.status_code == 200, (run_id, response.status_code, response.text)
    body: dict[str, Any] = response.json()
    return body


async def queue_view(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    try:
        response = await http.get(f"{url}/agents/queue")
    except httpx.TransportError as err:
        raise AssertionError(f"{url}: {err!r}") from err
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def finals(
    stack: Stack, http: httpx.AsyncClient, run_ids: Iterable[str], timeout: float = 120
) -> dict[str, dict[str, Any]]:
    """Every run's final status (DONE or ERROR), read from both APIs in turn."""
    wanted = list(run_ids)
    ended: dict[str, dict[str, Any]] = {}

    async def check() -> dict[str, dict[str, Any]]:
        for number, run_id in enumerate(wanted):
            if run_id not in ended:
                body = await status(http, stack.api_url(number % 2), run_id)
                assert body["state"] in FINAL, body
                ended[run_id] = body
        return ended

    return await assert_eventually(check, timeout=timeout, interval=0.3)


# --- what the agents logged --------------------------------------------------------------------


def worker_lines(stack: Stack, *events: str) -> list[dict[str, Any]]:
    """These events from every worker the stack ever ran, killed ones included."""
    return [
        line for worker in stack.every_worker for line in worker.log.read()
        if line.get("event") in events
    ]  # fmt: skip


def completes(stack: Stack) -> Counter[str]:
    """How many attempts of each run's agent ran to their end (``agent_complete``)."""
    return Counter(line["run_id"] for line in worker_lines(stack, "agent_complete"))


def started_runs(stack: Stack) -> set[str]:
    return {line["run_id"] for line in worker_lines(stack, "agent_start")}


def first_agent_start(stack: Stack, run_id: str) -> datetime:
    starts = [
        when(line["timestamp"])
        for line in worker_lines(stack, "agent_start")
        if line["run_id"] == run_id
    ]
    assert starts, f"no agent of {run_id} started"
    return min(starts)


async def agent_started(stack: Stack, run_id: str, timeout: float = 60) -> datetime:
    async def check() -> datetime:
        return first_agent_start(stack, run_id)

    return await assert_eventually(check, timeout=timeout, interval=0.05)


def working(worker: LoggedProcess) -> list[tuple[str, int]]:
    """The (run id, attempt) of agents that started on this worker and logged no end."""
    open_attempts: dict[tuple[str, int], None] = {}
    for line in worker.log.read():
        key = (str(line.get("run_id")), int(line.get("attempt") or 0))
        if line.get("event") == "agent_start":
            open_attempts[key] = None
        elif line.get("event") in END_EVENTS:
            open_attempts.pop(key, None)
    return list(open_attempts)


async def an_agent_working(stack: Stack, timeout: float = 60) -> tuple[int, str, int]:
    """(worker index, run id, attempt) of an agent working right now on a live worker."""

    async def check() -> tuple[int, str, int]:
        for index, worker in enumerate(stack.workers):
            if worker is not None and worker.running():
                for run_id, attempt in working(worker):
                    return index, run_id, attempt
        raise AssertionError("no agent is working")

    return await assert_eventually(check, timeout=timeout, interval=0.02)


def spans_of(stack: Stack, run_ids: Iterable[str]) -> list[Span]:
    wanted = set(run_ids)
    return [span for span in stack.spans() if span.run_id in wanted]


def most_at_once(spans: list[Span]) -> int:
    """The largest number of agent attempts working at one instant (an end before a start at
    the same instant: touching spans do not overlap)."""
    changes = sorted([(s.start, 1) for s in spans] + [(s.end, -1) for s in spans])
    current = peak = 0
    for _, change in changes:
        current += change
        peak = max(peak, current)
    return peak


def when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def seconds(later: datetime, earlier: datetime) -> float:
    return round((later - earlier).total_seconds(), 2)


def positions(accepted: list[Accepted]) -> str:
    return ",".join("-" if a.queue_position is None else str(a.queue_position) for a in accepted)


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(temporal_cli()), *args, "--address", stack.server.address],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# --- 1. FIFO -----------------------------------------------------------------------------------


async def test_1_runs_start_in_the_order_their_202s_were_given_across_both_apis(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    began = time.perf_counter()
    accepted = await enqueue_in_turn(stack, http, 10)
    enqueued_in = time.perf_counter() - began
    # One read of the queue right after the last 202: what still waits, in order.
    waiting = [run["run_id"] for run in (await queue_view(http, stack.api_url(0)))["queued"]]
    run_ids = [a.run_id for a in accepted]
    ended = await finals(stack, http, run_ids)

    assert [ended[r]["state"] for r in run_ids] == ["DONE"] * len(run_ids), ended
    slot_starts = [when(ended[r]["started_at"]) for r in run_ids]
    assert slot_starts == sorted(slot_starts), "runs got the slot in the order of their 202s"
    agent_starts = [first_agent_start(stack, r) for r in run_ids]
    assert agent_starts == sorted(agent_starts), "agents started in the order of the 202s"
    assert waiting == run_ids[len(run_ids) - len(waiting) :], (
        "what waits is the tail of the 202s, in order",
        waiting,
    )
    check_positions(accepted, slot_starts, agent_starts)
    record(
        "20_fifo",
        "10 runs enqueued one after the other, alternating 2 APIs, 1 s agents",
        "started in the order of their 202s (slot start and agent start); every "
        "queue_position agrees with when the runs ahead actually started",
        runs=len(run_ids),
        queue_positions_given=positions(accepted),
        seconds_to_enqueue_all=round(enqueued_in, 2),
    )


def check_positions(
    accepted: list[Accepted], slot_starts: list[datetime], agent_starts: list[datetime]
) -> None:
    """Run i's queue_position p says i - (p - 1) of the runs before it had left the queue
    (got or were handed the slot) when it was accepted; None says all of them had and the slot
    was free. That count only grows (FIFO), is at least the runs whose agent had started before
    i was sent, and at most the runs whose slot execution had started by i's 202, plus the one
    the slot may have claimed a moment before it starts."""
    assert accepted[0].queue_position is None, "the stack was idle: the first run starts at once"
    left_before = 0
    for i, run in enumerate(accepted[1:], start=1):
        left = i if run.queue_position is None else i - (run.queue_position - 1)
        lower = sum(1 for start in agent_starts[:i] if start < run.sent)
        upper = sum(1 for start in slot_starts[:i] if start <= run.answered) + 1
        assert run.queue_position is None or run.queue_position >= 1, run
        assert left_before <= left <= i, (i, positions(accepted))
        assert lower <= left <= upper, (i, run, lower, left, upper, positions(accepted))
        left_before = left


# --- 2. Exactly once ---------------------------------------------------------------------------

RUNS_EXACTLY_ONCE = 50
# The request during which an API is killed: the 25th, sent to API 0.
KILLED_REQUEST = 24


async def post_then_kill_api(stack: Stack, index: int, number: int, key: str) -> tuple[str, bool]:
    """POST a run to API ``index`` and SIGKILL that API once it has accepted the run (it logs
    ``run_accepted`` just before it answers), without having read a byte of the answer. The run
    id it accepted, and whether its 202 had reached our socket before the kill."""
    api = stack.apis[index]
    assert api is not None
    body = json.dumps(payload(number)).encode()
    head = (
        "POST /agents/run HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Idempotency-Key: {key}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.api_ports[index])
    writer.write(head + body)
    await writer.drain()

    async def accepted() -> str:
        lines = [
            line for line in api.log.events("run_accepted") if line.get("idempotency_key") == key
        ]
        assert len(lines) == 1, lines
        run_id: str = lines[0]["run_id"]
        return run_id

    run_id = await assert_eventually(accepted, timeout=15, interval=0.005)
    stack.kill_api(index)
    answer = await reader.read()
    writer.close()
    return run_id, answer.startswith(b"HTTP/1.1 202")


async def queue_watcher_pid(client: Client) -> int | None:
    """The pid of the worker running the queue's watcher (``watch_slot``) right now, if any:
    from the attempt's worker identity, ``<pid>@<host>`` by default."""
    try:
        description = await client.get_workflow_handle(QUEUE_ID).describe()
    except RPCError:
        return None
    for pending in description.raw_description.pending_activities:
        started = pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        pid = pending.last_worker_identity.partition("@")[0]
        if pending.activity_type.name == "watch_slot" and started and pid.isdigit():
            return int(pid)
    return None


async def kill_the_worker_of_a_working_agent(stack: Stack) -> tuple[str, datetime]:
    """SIGKILL the worker on which an agent is working, at a moment when that worker also runs
    the queue's watcher (the worst case: the queue loses sight of the slot too), then start it
    again; the run whose agent the kill cut short, and when. A kill that lands just after the
    agent's end (a race with its last step) does not count: try on the next agent."""
    client = await Client.connect(stack.server.address)

    async def target() -> tuple[int, str, int]:
        pid = await queue_watcher_pid(client)
        for index, worker in enumerate(stack.workers):
            if worker is not None and worker.running() and worker.pid == pid:
                for run_id, attempt in working(worker):
                    return index, run_id, attempt
        raise AssertionError("no agent working on the worker that runs the queue's watcher")

    for _ in range(5):
        index, run_id, attempt = await assert_eventually(target, timeout=90, interval=0.02)
        worker = stack.workers[index]
        assert worker is not None
        stack.kill_worker(index)
        stack.start_worker(index)
        if (run_id, attempt) in working(worker):
            assert worker.log_path is not None
            return run_id, stack.killed_at[worker.log_path]
    raise AssertionError("five kills in a row came just after an agent finished")


async def test_2_fifty_queued_runs_run_exactly_once_through_api_worker_and_server_sigkills(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    """One scenario, three faults in turn while 50 runs drain: (a) SIGKILL API 0 once it has
    accepted a request (before the client read the answer), retry the request with its
    Idempotency-Key on API 1, restart API 0 and go on enqueuing on both; (b) SIGKILL the worker
    running the current agent (when it also runs the queue's watcher), restart it; (c) SIGKILL
    the Temporal server while an agent works, restart it on the same db file."""
    seen_before = started_runs(stack)
    began = time.perf_counter()
    keys = [f"exactly-once-{i}-{uuid.uuid4().hex[:12]}" for i in range(RUNS_EXACTLY_ONCE)]
    accepted: list[str] = []
    for i, key in enumerate(keys):
        if i != KILLED_REQUEST:
            accepted.append((await enqueue(http, stack.api_url(i % 2), i, key)).run_id)
            continue
        # (a) The API dies with the request in flight; the client retries on the other API.
        accepted_by_killed, answer_arrived = await post_then_kill_api(stack, 0, i, key)
        retried = await enqueue(http, stack.api_url(1), i, key)
        assert retried.run_id == accepted_by_killed, "the retry found the run, not a second one"
        accepted.append(retried.run_id)
        await stack.start_api(0)
    enqueued_in = time.perf_counter() - began
    assert len(set(accepted)) == RUNS_EXACTLY_ONCE

    # (b) The worker running the current agent, once ten runs are done.
    await assert_eventually(lambda: _done_at_least(stack, accepted, 10), timeout=120)
    cut_run, worker_killed_at = await kill_the_worker_of_a_working_agent(stack)

    # (c) The Temporal server, once five more are done, while an agent works.
    done_before = sum(completes(stack)[r] for r in accepted)
    await assert_eventually(lambda: _done_at_least(stack, accepted, done_before + 5), timeout=120)
    await an_agent_working(stack)
    stack.server.stop(signal.SIGKILL)
    server_killed_at = datetime.now(UTC)
    stack.server.start()
    restarted_at = datetime.now(UTC)
    await assert_eventually(lambda: _ready(stack, http), timeout=60, interval=0.2)
    ready_at = datetime.now(UTC)

    # Every accepted run's agent ran to its end: read from the agents' own log lines.
    await assert_eventually(lambda: _all_completed(stack, accepted), timeout=300, interval=0.5)
    drained_in = time.perf_counter() - began
    counted = completes(stack)
    not_once = {r: counted[r] for r in accepted if counted[r] != 1}
    assert not_once == {}, ("agent_complete per run, across every worker log", not_once)
    strangers = started_runs(stack) - seen_before - set(accepted)
    assert strangers == set(), ("agents ran for runs no client was given", strangers)
    agent_starts = [first_agent_start(stack, r) for r in accepted]
    assert agent_starts == sorted(agent_starts), "FIFO held through the faults"

    # What the clients read agrees, and the queue, with nothing left to hand out, closes.
    # Failed before the fix: after (b) the queue continued as new holding a chain of claims on
    # slot 0, watched only the last claimant and never resolved the others: those runs read
    # PENDING for ever (their agents ran, DONE) and the queue never closed.
    ended = await _statuses_settle(stack, http, accepted, timeout=30)
    not_done = {r: (b["state"], b["error"]) for r, b in ended.items() if b["state"] != "DONE"}
    assert not_done == {}, ("runs whose agent completed but whose status is not DONE", not_done)
    client = await Client.connect(stack.server.address)
    await assert_eventually(lambda: queue_closed(client), timeout=30, interval=0.2)
    assert completes(stack) == counted, "no agent ran again meanwhile"
    assert await queue_view(http, stack.api_url(0)) == {"running": [], "queued": []}

    cut_done = max(
        when(line["timestamp"])
        for line in worker_lines(stack, "agent_complete")
        if line["run_id"] == cut_run
    )
    cut_retry = min(
        span.start for span in spans_of(stack, [cut_run]) if span.start > worker_killed_at
    )
    next_run = accepted[accepted.index(cut_run) + 1]
    after_restart = [start for start in agent_starts if start > restarted_at]
    attempts = Counter(body["attempt"] for body in ended.values())
    record(
        "21_exactly_once",
        f"{RUNS_EXACTLY_ONCE} runs enqueued over 2 APIs, 1 s agents; while they drain: SIGKILL "
        "an API that had accepted a run whose answer its client never read (the client retried "
        "with its Idempotency-Key on the other API), the worker running the current agent and "
        "the queue's watcher, the Temporal server (restarted on its db file)",
        f"all {RUNS_EXACTLY_ONCE} DONE, each agent_complete exactly once across every worker "
        "log, no agent for a run nobody was given, FIFO kept, the queue closed",
        seconds_to_enqueue_all=round(enqueued_in, 1),
        seconds_to_drain_all=round(drained_in, 1),
        killed_api_had_sent_its_202=answer_arrived,
        seconds_worker_kill_to_retry_start=seconds(cut_retry, worker_killed_at),
        seconds_retry_done_to_next_agent_start=seconds(
            first_agent_start(stack, next_run), cut_done
        ),
        seconds_server_down=seconds(restarted_at, server_killed_at),
        seconds_server_restart_to_apis_ready=seconds(ready_at, restarted_at),
        seconds_server_restart_to_next_agent_start=seconds(min(after_restart), restarted_at),
        runs_by_final_attempt=", ".join(f"{n}: {c}" for n, c in sorted(attempts.items())),
    )


async def _all_completed(stack: Stack, run_ids: list[str]) -> None:
    counted = completes(stack)
    missing = [r for r in run_ids if counted[r] == 0]
    assert missing == [], f"{len(missing)} runs' agents have not completed: {missing[:3]}..."


async def _statuses_settle(
    stack: Stack, http: httpx.AsyncClient, run_ids: list[str], timeout: float
) -> dict[str, dict[str, Any]]:
    """Every run's status once all are final, or (past ``timeout``) as they are then."""
    try:
        return await finals(stack, http, run_ids, timeout=timeout)
    except AssertionError:
        return {r: await status(http, stack.api_url(0), r) for r in run_ids}


async def _done_at_least(stack: Stack, run_ids: list[str], count: int) -> None:
    counted = completes(stack)
    assert sum(counted[r] for r in run_ids) >= count


async def _ready(stack: Stack, http: httpx.AsyncClient) -> None:
    for index in range(len(stack.apis)):
        try:
            response = await http.get(f"{stack.api_url(index)}/readyz")
        except httpx.TransportError as err:
            raise AssertionError(repr(err)) from err
        assert response.status_code == 200, response.text


async def test_2b_a_post_retried_after_503_with_its_idempotency_key_is_one_run(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    """What test 2 ran into on a loaded machine (a queue workflow task that took 8 s), made to
    happen: while a run holds the slot, the workers are paused (SIGSTOP: a long GC pause, a
    frozen VM) with a task of the queue workflow in their hands, so the queue cannot answer. A
    POST gets 503 ("retry later") and so does its retry on the other API; the workers resume
    and a third try gets its 202. Every try carried the same Idempotency-Key and body, which
    the README promises return the same run_id: one run, one agent."""
    before = started_runs(stack)
    holder = await enqueue(http, stack.api_url(0))
    await agent_started(stack, holder.run_id)
    client = await Client.connect(stack.server.address)
    key, other_key = (f"retried-after-503-{uuid.uuid4().hex[:12]}" for _ in range(2))

    def post(index: int, idempotency_key: str) -> Awaitable[httpx.Response]:
        return http.post(
            f"{stack.api_url(index)}/agents/run",
            json=payload(1),
            headers={"Idempotency-Key": idempotency_key},
        )

    for index in range(len(stack.workers)):
        stack.pause_worker(index)
    try:
        # Another client's enqueue hands the queue a task, which a paused worker takes.
        other = asyncio.ensure_future(post(1, other_key))
        await assert_eventually(lambda: _queue_task_started(client), timeout=15, interval=0.05)
        refused = await asyncio.gather(post(0, key), post(1, key))
        await other
    finally:
        for index in range(len(stack.workers)):
            stack.resume_worker(index)
    assert [r.status_code for r in refused] == [503, 503], [r.text for r in refused]
    accepted = await enqueue(http, stack.api_url(0), 1, key)
    others = await enqueue(http, stack.api_url(1), 1, other_key)

    async def drained() -> None:
        assert await queue_view(http, stack.api_url(0)) == {"running": [], "queued": []}

    await assert_eventually(drained, timeout=60, interval=0.3)
    ran = started_runs(stack) - before - {holder.run_id, others.run_id}
    # Failed before the fix: the queue remembered a request's answer only after an await (its
    # dispatch), so the two refused tries, handed to it together once the workers resumed, each
    # got a run of their own; the third try got the first of them.
    assert ran == {accepted.run_id}, ("one key, one run: agents ran for", sorted(ran))


async def _queue_task_started(client: Client) -> None:
    try:
        description = await client.get_workflow_handle(QUEUE_ID).describe()
    except RPCError as err:
        raise AssertionError(f"{QUEUE_ID}: {err}") from err
    task = description.raw_description.pending_workflow_task
    assert task.state == PendingWorkflowTaskState.PENDING_WORKFLOW_TASK_STATE_STARTED, task


# --- 3. No leaked slot ---------------------------------------------------------------------------

# How each way of ending leaves the first run: its state, and what its error starts with.
ENDINGS: dict[str, tuple[str, str | None]] = {
    "done": ("DONE", None),
    "agent_timeout": ("ERROR", "TimeoutError"),
    "cancel": ("ERROR", "cancelled"),
    "terminate": ("ERROR", "terminated"),
    "worker_sigkill": ("ERROR", "TimeoutError"),
}
# The agent's own time limit in the timeout case: well inside its 3 s of work.
AGENT_TIMEOUT_SECONDS = 1.0


async def start_with(stack: Stack, policy: RunPolicy) -> tuple[str, int | None]:
    """A run started through the Python API with its own policy (the API's is the settings')."""
    client = await Client.connect(stack.server.address)
    request = start_request("policy-checker", USER_ID, policy=policy, on_busy=OnBusy.ENQUEUE)
    outcome = await start_run_detailed(client, request, target=stack.settings().run_target())
    return outcome.run_id, outcome.queue_position


@pytest.fixture(scope="class")
async def long_agents(stack: Stack) -> AsyncIterator[None]:
    """The workers of the class's tests run 3 s agents: time to act on one while it works."""
    await stack.reconfigure(apis=False, agent_duration_seconds=LONG_AGENT_SECONDS)
    yield
    await stack.heal()
    await stack.reconfigure(apis=False, agent_duration_seconds=AGENT_SECONDS)


@pytest.mark.usefixtures("long_agents")
class TestNoLeakedSlot:
    @pytest.mark.parametrize("ending", list(ENDINGS))
    async def test_3_the_next_queued_run_starts_however_the_running_one_ends(
        self, stack: Stack, http: httpx.AsyncClient, ending: str
    ) -> None:
        policy = stack.settings().run_policy()
        if ending == "agent_timeout":
            first, position = await start_with(
                stack, replace(policy, max_attempts=1, timeout_seconds=AGENT_TIMEOUT_SECONDS)
            )
        elif ending == "worker_sigkill":
            # One attempt: the kill ends the run (a retry would be test 2's case).
            first, position = await start_with(stack, replace(policy, max_attempts=1))
        else:
            started = await enqueue(http, stack.api_url(0))
            first, position = started.run_id, started.queue_position
        assert position is None, "the stack was idle: the first run starts at once"
        second = await enqueue(http, stack.api_url(1), 1)
        assert second.queue_position == 1
        await agent_started(stack, first)

        if ending == "cancel":
            response = await http.post(f"{stack.api_url(0)}/agents/runs/{first}/cancel")
            assert response.status_code in (200, 202), response.text
        elif ending == "terminate":
            where = await status(http, stack.api_url(0), first)
            result = await asyncio.to_thread(
                cli, stack, "workflow", "terminate", "--workflow-id", where["workflow_id"],
                "--run-id", where["temporal_run_id"], "--reason", "operator",
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
        elif ending == "worker_sigkill":
            index = stack.worker_running(first)
            assert index is not None
            stack.kill_worker(index)
            stack.start_worker(index)

        ended = (await finals(stack, http, [first], timeout=60))[first]
        next_run = (await finals(stack, http, [second.run_id], timeout=60))[second.run_id]

        state, error = ENDINGS[ending]
        assert ended["state"] == state, ended
        if error is not None:
            assert ended["error"].startswith(error), ended
        assert next_run["state"] == "DONE", next_run
        spans = spans_of(stack, [first, second.run_id])
        assert overlapping(spans) == [], spans
        stopped = max(span.end for span in spans if span.run_id == first)
        closed = when(ended["finished_at"])
        next_start = min(span.start for span in spans if span.run_id == second.run_id)
        record(
            f"22_slot_freed_{ending}",
            f"a {LONG_AGENT_SECONDS:g} s agent working, one run queued; the working run ends: "
            f"{ending.replace('_', ' ')}",
            f"first run {ended['state']}"
            + (f" ({ended['error'][:60]})" if ended["error"] else "")
            + "; the queued run started on the slot and ended DONE; no overlap",
            seconds_agent_stop_to_next_agent_start=seconds(next_start, stopped),
            # Negative: the run closed before its agent stopped (a terminate).
            seconds_agent_stop_to_run_closed=seconds(closed, stopped),
            first_agent_ended_by=next(s.ended_by for s in spans if s.run_id == first),
        )


# --- 4. Two slots --------------------------------------------------------------------------------


async def test_4_with_two_slots_two_agents_work_at_once_never_three(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    await stack.reconfigure(agent_slots=2)
    try:
        accepted = await enqueue_in_turn(stack, http, 10)
        run_ids = [a.run_id for a in accepted]
        TWO_SLOT_RUNS.update(run_ids)
        ended = await finals(stack, http, run_ids)
    finally:
        await stack.heal()
        await settle(stack, http)
        await stack.reconfigure(agent_slots=1)

    assert [ended[r]["state"] for r in run_ids] == ["DONE"] * len(run_ids), ended
    assert [a.queue_position for a in accepted[:2]] == [None, None], positions(accepted)
    assert {ended[r]["workflow_id"] for r in run_ids} == {WORKFLOW_ID, f"{WORKFLOW_ID}:slot-1"}
    spans = spans_of(stack, run_ids)
    assert most_at_once(spans) == 2, spans
    record(
        "23_two_slots",
        "AGENT_SLOTS=2 (APIs and workers restarted with it), 10 runs enqueued alternating 2 APIs",
        "all DONE on the two slots' workflow ids; from the agents' log lines, 2 at once at "
        "most, and 2 reached",
        runs=len(run_ids),
        queue_positions_given=positions(accepted),
    )


# --- 5. Bounded history --------------------------------------------------------------------------

RUNS_LONG_QUEUE = 40


async def test_5_the_queue_continues_as_new_loses_nothing_and_no_history_grows_unbounded(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    await stack.reconfigure(apis=False, agent_duration_seconds=FAST_AGENT_SECONDS)
    try:
        since = datetime.now(UTC)
        accepted = await enqueue_in_turn(stack, http, RUNS_LONG_QUEUE)
        run_ids = [a.run_id for a in accepted]
        ended = await finals(stack, http, run_ids)
    finally:
        await stack.heal()
        await settle(stack, http)
        await stack.reconfigure(apis=False, agent_duration_seconds=AGENT_SECONDS)

    client = await Client.connect(stack.server.address)
    queues = [
        execution
        async for execution in client.list_workflows(f"WorkflowId = '{QUEUE_ID}'")
        if execution.start_time >= since
    ]
    carried: set[str] = set()
    for execution in queues:
        if execution.status != WorkflowExecutionStatus.CONTINUED_AS_NEW:
            continue
        handle = client.get_workflow_handle(QUEUE_ID, run_id=execution.run_id)
        memo = await (await handle.describe()).memo()
        carried |= {
            key[2:]
            for key, where in memo.items()
            if key.startswith("r:") and where.get("state") in ("queued", "claimed")
        }
    assert len(queues) > 1, "the queue continued as new"
    assert carried, "runs were waiting when it did"
    assert carried <= set(run_ids), carried - set(run_ids)
    assert {ended[r]["state"] for r in run_ids} == {"DONE"}, ended
    counted = completes(stack)
    assert {r: counted[r] for r in run_ids if counted[r] != 1} == {}

    # Every execution of the module, the queue's and the slots', whatever test made it.
    lengths: dict[str, list[int]] = {"queue": [], "slot": []}
    async for execution in client.list_workflows(f"WorkflowId STARTS_WITH '{WORKFLOW_ID}'"):
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        events = len((await handle.fetch_history()).events)
        lengths["queue" if execution.id == QUEUE_ID else "slot"].append(events)
    longest = {kind: max(found) for kind, found in lengths.items()}
    assert longest["queue"] <= HISTORY_BOUND, lengths["queue"]
    assert longest["slot"] <= HISTORY_BOUND, sorted(lengths["slot"])[-5:]
    record(
        "24_bounded_history",
        f"{RUNS_LONG_QUEUE} runs enqueued one after the other, 0.2 s agents, server suggesting "
        f"continue-as-new after {SUGGEST_CONTINUE_AS_NEW} events",
        f"the queue continued as new {len(queues) - 1} times with runs waiting; all "
        f"{len(carried)} runs carried across ended DONE exactly once; no execution of the "
        f"module above {HISTORY_BOUND} events",
        queue_executions_in_module=len(lengths["queue"]),
        max_events_per_queue_execution=longest["queue"],
        max_events_per_slot_execution=longest["slot"],
    )


# --- 6. Never N+1 --------------------------------------------------------------------------------


async def test_6_never_more_agents_at_once_than_slots_over_the_whole_module(stack: Stack) -> None:
    spans = stack.spans()
    one_slot = [span for span in spans if span.run_id not in TWO_SLOT_RUNS]
    if len(spans) < 10:
        pytest.skip("a check over the module's other tests: run it with them")

    assert most_at_once(spans) <= (2 if TWO_SLOT_RUNS else 1)
    assert overlapping(one_slot) == [], overlapping(one_slot)[:3]
    gap = smallest_gap_seconds(one_slot)
    record(
        "25_never_n_plus_one",
        "every agent attempt of tests 1-5, from the agents' own log lines (killed workers "
        "included)",
        f"{len(spans)} attempts: at most 2 at once over the module, none overlapping outside "
        "the AGENT_SLOTS=2 test",
        attempts=len(spans),
        most_at_once_with_two_slots=most_at_once([s for s in spans if s.run_id in TWO_SLOT_RUNS]),
        smallest_gap_between_one_slot_agents_seconds=None if gap is None else round(gap, 3),
        api_503_answers_retried=len(RETRIED_503),
    )
