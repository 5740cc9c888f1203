"""Changing N is an operation (issue 18): GET and PUT /agents/limits against a real server and
a real worker, the agents' own work measured in the agent. A raised N grants at once; a lowered
N lets the agents at work finish and grants nothing until fewer than N work; every change is
logged with who made it."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy

from agent_runner import deployment
from agent_runner.agents import Agent, AgentContext, NoParams
from agent_runner.contract import (
    CHANGE_SETTINGS,
    SETTINGS_MEMO,
    SETTINGS_WORKFLOW,
    DeploymentSettings,
    ScopeLimits,
    ScopeOverride,
    SettingsChange,
)
from agent_runner.deployment import ChangeExpiredError, change_limits, read_deployment
from agent_runner.ids import settings_id
from agent_runner.settings import Settings
from tests.helpers import (
    USER_ID,
    ListHandler,
    app_client,
    assert_eventually,
    coordinating_worker,
    in_process_worker,
    post_run,
    start_run,
    wait_for_state,
)


@dataclass
class Gated(Agent[NoParams]):
    """A policy checker that works until the test releases its run, and records when each of
    its attempts worked."""

    name = "policy-checker"
    released: defaultdict[str, asyncio.Event] = field(
        default_factory=lambda: defaultdict(asyncio.Event)
    )
    worked: dict[str, tuple[float, float]] = field(default_factory=dict)
    working: set[str] = field(default_factory=set)
    most_at_once: int = 0

    async def run(self, ctx: AgentContext, params: NoParams) -> str:
        began = time.monotonic()
        self.working.add(ctx.run_id)
        self.most_at_once = max(self.most_at_once, len(self.working))
        try:
            await self.released[ctx.run_id].wait()
        finally:
            self.working.discard(ctx.run_id)
            self.worked[ctx.run_id] = (began, time.monotonic())
        return "approved"


@pytest.fixture
async def gated(
    temporal_client: Client, idle_settings: Settings
) -> AsyncIterator[tuple[httpx.AsyncClient, Gated]]:
    # A task queue of its own: on the shared one, the session's worker process could take an
    # agent this test means to hold.
    agent = Gated()
    async with in_process_worker(temporal_client, idle_settings, [agent]):
        async for api in app_client(idle_settings):
            yield api, agent


async def working(agent: Gated, *run_ids: str) -> None:
    async def check() -> None:
        assert set(run_ids) <= agent.working, agent.working

    await assert_eventually(check, timeout=60)


async def test_raising_n_grants_at_once_and_lowering_it_never_stops_or_exceeds(
    gated: tuple[httpx.AsyncClient, Gated], log_lines: ListHandler
) -> None:
    api, agent = gated
    seeded = (await api.get("/agents/limits")).json()
    assert (seeded["scope_kind"], seeded["slots"]) == ("global", 1)

    first = await start_run(api)
    await working(agent, first)
    assert (await post_run(api)).status_code == 409

    raised = await api.put("/agents/limits", json={"slots": 2})
    assert raised.status_code == 200, raised.text
    assert (raised.json()["slots"], raised.json()["version"]) == (2, seeded["version"] + 1)
    assert raised.json()["changed_by"].startswith("no API key")
    second = await start_run(api)
    await working(agent, first, second)

    lowered = await api.put("/agents/limits", json={"slots": 1})
    assert lowered.json()["slots"] == 1
    third = await _enqueue(api)
    agent.released[first].set()
    await wait_for_state(api, first, "DONE")
    # One agent still works, and N is 1 now: the third waits for the second.
    assert (await api.get(f"/agents/status/{third}")).json()["state"] == "PENDING"
    agent.released[second].set()
    agent.released[third].set()
    await wait_for_state(api, third, "DONE")

    assert agent.worked[third][0] >= max(agent.worked[first][1], agent.worked[second][1])
    assert agent.most_at_once == 2
    changes = log_lines.events("limits_changed")
    assert [line["slots"] for line in changes] == [2, 1], changes
    assert all(line["changed_by"].startswith("no API key") for line in changes)


async def _enqueue(api: httpx.AsyncClient) -> str:
    response = await api.post(
        "/agents/run",
        json={"agent_type": "policy-checker", "user_id": USER_ID, "on_busy": "enqueue"},
    )
    assert response.status_code == 202, response.text
    run_id: str = response.json()["run_id"]
    return run_id


@pytest.mark.parametrize(
    "body",
    [
        *({}, {"slots": 0}, {"slots": 101}, {"queue_max": 0}, {"slot": 2}, {"slots": "two"}),
        # Not JSON numbers: never read as 1 or 2.
        *({"slots": True}, {"slots": "2"}, {"slots": 2.5}),
        # The queue's order.
        *({"aging_seconds": -1}, {"aging_seconds": "60"}, {"fair_shares": "yes"}),
        *({"weights": {"a": 0}}, {"weights": {"a": 1001}}, {"weights": {"a b": 2}}),
        *({"weights": {"a": "2"}}, {"weights": [1]}, {"slots": None}),
    ],
)
async def test_a_bad_change_is_a_422_and_changes_nothing(
    api: httpx.AsyncClient, body: object
) -> None:
    before = (await api.get("/agents/limits")).json()
    answer = await api.put("/agents/limits", json=body)
    assert answer.status_code == 422, answer.text
    assert (await api.get("/agents/limits")).json() == before


async def test_a_change_in_the_records_first_task_changes_the_record_not_the_seed(
    temporal_client: Client, idle_settings: Settings
) -> None:
    """Failed before (tests/test_admission.py under load): a change that reached the settings
    workflow in its first task, before it had read its input, answered with the change, and
    then the input (the seed) overwrote it; every coordinator followed the seed. Update-with-
    start delivers the change in that first task every time."""
    seed = DeploymentSettings(limits=ScopeLimits(slots=1), changed_by="seed")
    start = WithStartWorkflowOperation(
        SETTINGS_WORKFLOW,
        seed,
        id=settings_id(idle_settings.workflow_id),
        task_queue=idle_settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        memo={SETTINGS_MEMO: seed},
    )
    change = SettingsChange(limits=ScopeLimits(slots=3, fair_shares=True), changed_by="test")
    async with coordinating_worker(idle_settings):
        answer = await temporal_client.execute_update_with_start_workflow(
            CHANGE_SETTINGS.name, change, start_workflow_operation=start,
            result_type=DeploymentSettings,
        )  # fmt: skip
        assert (answer.version, answer.limits.slots, answer.changed_by) == (2, 3, "test")

        async def followed() -> None:
            record, _ = await read_deployment(temporal_client, idle_settings.workflow_id)
            assert record is not None
            assert (record.limits.slots, record.limits.fair_shares) == (3, True), record

        await assert_eventually(followed)


async def test_a_paused_scope_queues_and_starts_nothing_until_resumed(
    gated: tuple[httpx.AsyncClient, Gated], log_lines: ListHandler
) -> None:
    api, agent = gated
    first = await start_run(api)
    await working(agent, first)
    paused = await api.post("/agents/scopes/global/pause")
    assert paused.status_code == 200, paused.text
    assert (paused.json()["scope"], paused.json()["paused"]) == ("global", True)
    assert (await api.get("/agents/limits")).json()["scopes"]["global"]["paused"] is True

    waiting = await _enqueue(api)
    refused = await post_run(api)
    assert refused.status_code == 409, refused.text
    assert refused.json()["detail"] == "This scope is paused, please retry later"
    agent.released[first].set()
    await wait_for_state(api, first, "DONE")
    # The slot is free and the scope paused: the waiting run keeps its place and says why.
    status = (await api.get(f"/agents/status/{waiting}")).json()
    assert (status["queue_position"], status["scope_paused"]) == (1, True), status
    assert waiting not in agent.worked
    assert waiting not in agent.working

    resumed = await api.post("/agents/scopes/global/resume")
    assert resumed.json()["paused"] is False
    # Granted at once (the coordinator is told), not at the scope's next start or close.
    await working(agent, waiting)
    agent.released[waiting].set()
    await wait_for_state(api, waiting, "DONE")
    changes = log_lines.events("limits_changed")
    assert [line["scope"] for line in changes] == ["global", "global"], changes
    assert changes[0]["scope_limits"]["paused"] is True
    assert all(line["changed_by"].startswith("no API key") for line in changes)


async def test_a_scope_of_its_own_n_grants_its_waiting_runs_at_once_and_can_be_cleared(
    gated: tuple[httpx.AsyncClient, Gated],
) -> None:
    api, agent = gated
    first = await start_run(api)
    await working(agent, first)
    second = await _enqueue(api)
    own = await api.put("/agents/limits/global", json={"slots": 2})
    assert own.status_code == 200, own.text
    assert (own.json()["slots"], own.json()["own"]["slots"]) == (2, 2)
    assert (await api.get("/agents/limits")).json()["slots"] == 1  # the deployment's: still 1
    await working(agent, first, second)
    assert (await api.get("/agents/limits/global")).json()["slots"] == 2

    cleared = await api.delete("/agents/limits/global")
    assert (cleared.json()["slots"], cleared.json()["own"]) == (1, None)
    assert (await post_run(api)).status_code == 409
    for run_id in (first, second):
        agent.released[run_id].set()
        await wait_for_state(api, run_id, "DONE")
    assert agent.most_at_once == 2


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/agents/limits/someone", {"slots": 2}),  # not a scope of a global deployment
        ("PUT", "/agents/limits/global", {"slots": 0}),
        ("PUT", "/agents/limits/global", {"aging_seconds": 5}),  # the deployment's, not a scope's
        ("PUT", "/agents/limits/global", {}),
        ("POST", "/agents/scopes/user:1/pause", None),
        ("GET", "/agents/limits/" + "x" * 101, None),
    ],
)
async def test_a_bad_scope_change_is_a_422_and_changes_nothing(
    api: httpx.AsyncClient, method: str, path: str, body: object
) -> None:
    before = (await api.get("/agents/limits")).json()
    answer = await api.request(method, path, json=body)
    assert answer.status_code == 422, answer.text
    assert (await api.get("/agents/limits")).json() == before


async def test_changes_made_at_once_are_all_kept(
    gated: tuple[httpx.AsyncClient, Gated],
) -> None:
    """Failed before (a new-user trial): three PUTs sent at once each answered 200 with its own
    change, and the record kept one of them (each wrote back the whole limits it had read)."""
    api, _ = gated
    answers = await asyncio.gather(
        api.put("/agents/limits", json={"slots": 3}),
        api.put("/agents/limits", json={"aging_seconds": 100}),
        api.put("/agents/limits", json={"fair_shares": True}),
        api.put("/agents/limits/global", json={"queue_max": 50}),
        api.post("/agents/scopes/global/pause"),
    )
    assert [answer.status_code for answer in answers] == [200] * 5, [a.text for a in answers]
    limits = (await api.get("/agents/limits")).json()
    assert (limits["slots"], limits["aging_seconds"], limits["fair_shares"]) == (3, 100, True)
    assert (limits["scopes"]["global"]["queue_max"], limits["scopes"]["global"]["paused"]) == (
        50,
        True,
    )


async def test_a_deployment_wide_pause_is_shown_and_undone_through_the_api(
    gated: tuple[httpx.AsyncClient, Gated], temporal_client: Client, idle_settings: Settings
) -> None:
    """Failed before (a new-user trial): a pause of the whole deployment, made through Temporal,
    did not show in GET /agents/limits, a scope's resume answered 200 still paused, and no
    request could undo it. Its own limits did not pause a scope either."""
    api, _ = gated
    assert (await api.put("/agents/limits/global", json={"slots": 2})).status_code == 200
    paused = await api.put("/agents/limits", json={"paused": True})
    assert paused.status_code == 200, paused.text
    assert (await api.get("/agents/limits")).json()["paused"] is True
    assert (await api.get("/agents/limits/global")).json()["paused"] is True
    refused = await post_run(api)
    assert refused.json()["detail"] == "This scope is paused, please retry later"
    resumed = await api.post("/agents/scopes/global/resume")
    assert resumed.status_code == 409, resumed.text
    assert "PUT /agents/limits" in resumed.json()["detail"]
    assert (await api.put("/agents/limits", json={"paused": False})).json()["paused"] is False
    assert (await post_run(api)).status_code == 202

    # A scope name no scope of this deployment can have is refused by the record itself (it
    # could never be changed back through the API).
    forged = SettingsChange(
        limits=ScopeLimits(slots=1), changed_by="another system", scope="../../etc",
        override=ScopeOverride(slots=5),
    )  # fmt: skip
    handle = temporal_client.get_workflow_handle(settings_id(idle_settings.workflow_id))
    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update(CHANGE_SETTINGS.name, forged, result_type=DeploymentSettings)
    assert "../../etc" not in (await api.get("/agents/limits")).json()["scopes"]


async def test_a_change_held_up_on_its_way_to_the_record_is_made_by_its_deadline_or_never(
    temporal_client: Client, idle_settings: Settings
) -> None:
    """A change that got no answer took effect whenever it reached the record: an update waits
    on the server while no worker runs the record, and a paused API takes its change up again
    when it wakes, over any change made since (the randomized run then had to count every
    unanswered change as possibly in effect for the rest of the run, and so never judged fair
    shares). A change now carries a deadline; the record refuses it after, and nothing
    changes."""
    seed = DeploymentSettings(limits=ScopeLimits(slots=1), changed_by="seed")
    await temporal_client.start_workflow(
        SETTINGS_WORKFLOW,
        seed,
        id=settings_id(idle_settings.workflow_id),
        task_queue=idle_settings.task_queue,
        memo={SETTINGS_MEMO: seed},
    )
    held_up = asyncio.create_task(
        change_limits(
            temporal_client,
            idle_settings,
            ScopeLimits(slots=3),
            changed_by="test",
            not_after=datetime.now(UTC) + timedelta(seconds=0.5),
        )
    )
    await asyncio.sleep(1.0)  # no worker runs the record yet: the update waits on the server
    async with coordinating_worker(idle_settings):
        with pytest.raises(ChangeExpiredError):
            await held_up
        record, _ = await read_deployment(temporal_client, idle_settings.workflow_id)
        assert record is not None
        assert (record.limits.slots, record.version) == (1, seed.version), record


async def test_a_change_no_worker_takes_up_is_answered_503_by_its_deadline(
    idle_settings: Settings,
) -> None:
    """With every worker down, a change waits on the server for a worker to run the record.
    The SDK waits for an update's answer with polls the server answers just before each one's
    deadline, and polls again: the PUT hung with no end. Its wait now ends with the change's
    deadline, and the record refuses it after that."""
    workers = coordinating_worker(idle_settings)
    await workers.__aenter__()
    running = True
    try:
        async for api in app_client(idle_settings):
            before = (await api.get("/agents/limits")).json()
            await workers.__aexit__(None, None, None)
            running = False
            async with asyncio.timeout(60):  # a hang fails here, not in CI's limit
                answer = await api.put("/agents/limits", json={"slots": before["slots"] + 1})
            assert answer.status_code == 503, answer.text
            assert answer.json()["detail"] == "Temporal is unavailable, please retry later"
    finally:
        if running:
            await workers.__aexit__(None, None, None)


async def test_a_change_made_is_answered_200_however_long_its_coordinators_take_to_follow(
    idle_api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the hostile review of the bound above: it first bounded the whole change, the
    telling of the coordinators and the second they take to follow included, so a change made
    whose telling ran past the deadline was answered 503. Here the coordinators take longer to
    follow than the change's deadline (8 s)."""
    monkeypatch.setattr(deployment, "SETTINGS_FRESH", timedelta(seconds=9))
    before = (await idle_api.get("/agents/limits")).json()
    answer = await idle_api.put("/agents/limits", json={"slots": before["slots"] + 1})
    assert answer.status_code == 200, answer.text
    assert answer.json()["slots"] == before["slots"] + 1
