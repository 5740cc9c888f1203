"""Admission control against a real server and real workers (issue 21): priorities, fair
shares by weight, deadlines in the queue, attach, and waits that explain themselves. Each run's
agent is held until the test releases it, so the order in which agents begin is the order in
which the coordinator granted their slots."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from agent_runner.agents import Agent, AgentContext, NoParams
from agent_runner.settings import Settings
from tests.helpers import (
    USER_ID,
    app_client,
    assert_eventually,
    in_process_worker,
    wait_for_state,
)

OTHER_USER = "5f0c2a8e-3b1d-4c6e-9a7f-2d8b4e6c1a3f"


@dataclass
class Held(Agent[NoParams]):
    """A policy checker that works until the test releases its run; records the order its
    runs began in."""

    name = "policy-checker"
    released: defaultdict[str, asyncio.Event] = field(
        default_factory=lambda: defaultdict(asyncio.Event)
    )
    began: list[str] = field(default_factory=list)
    # When each run's agent began, and began and stopped (the last attempt's).
    begun_at: dict[str, float] = field(default_factory=dict)
    spans: dict[str, tuple[float, float]] = field(default_factory=dict)

    async def run(self, ctx: AgentContext, params: NoParams) -> str:
        start = self.begun_at[ctx.run_id] = time.monotonic()
        if ctx.run_id not in self.began:
            self.began.append(ctx.run_id)
        try:
            await self.released[ctx.run_id].wait()
        finally:
            self.spans[ctx.run_id] = (start, time.monotonic())
        return "approved"


@pytest.fixture
async def held(
    temporal_client: Client, idle_settings: Settings
) -> AsyncIterator[tuple[httpx.AsyncClient, Held]]:
    agent = Held()
    async with in_process_worker(temporal_client, idle_settings, [agent]):
        async for api in app_client(idle_settings):
            yield api, agent


async def start(api: httpx.AsyncClient, expected: int = 202, **body: Any) -> dict[str, Any]:
    """POST a run (a 503, not made, is sent again); insist on ``expected``."""
    request = {"agent_type": "policy-checker", "user_id": USER_ID, **body}
    for _ in range(120):
        response = await api.post("/agents/run", json=request)
        if response.status_code != 503:
            break
        await asyncio.sleep(0.5)
    assert response.status_code == expected, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def began(agent: Held, count: int) -> list[str]:
    async def check() -> list[str]:
        assert len(agent.began) >= count, agent.began
        return agent.began[:count]

    return await assert_eventually(check, timeout=60)


async def serve_one_by_one(agent: Held, runs: int) -> list[str]:
    """Release each run as it begins, until ``runs`` have begun: their order."""
    for count in range(1, runs + 1):
        order = await began(agent, count)
        agent.released[order[-1]].set()
    return agent.began[:runs]


async def test_waiting_runs_are_served_by_priority_then_first_come(
    held: tuple[httpx.AsyncClient, Held],
) -> None:
    api, agent = held
    holder = (await start(api))["run_id"]
    await began(agent, 1)
    low = (await start(api, on_busy="enqueue", priority=5))["run_id"]
    normal = (await start(api, on_busy="enqueue"))["run_id"]
    urgent = await start(api, on_busy="enqueue", priority=1)
    assert urgent["queue_position"] == 1
    later_normal = (await start(api, on_busy="enqueue"))["run_id"]

    waiting = (await api.get(f"/agents/status/{later_normal}")).json()
    assert (waiting["priority"], waiting["queue_position"]) == (3, 3)
    assert waiting["ahead"] == {"1": 1, "2": 0, "3": 1, "4": 0, "5": 0}
    assert waiting["slot_holders"] == [holder]
    assert waiting["waiting_for"] == "queue"
    queue = (await api.get("/agents/queue")).json()
    assert [run["run_id"] for run in queue["queued"]] == [
        urgent["run_id"],
        normal,
        later_normal,
        low,
    ]

    order = await serve_one_by_one(agent, 5)
    assert order == [holder, urgent["run_id"], normal, later_normal, low]


async def test_fair_shares_give_slots_to_two_keys_by_their_weights(
    held: tuple[httpx.AsyncClient, Held],
) -> None:
    api, agent = held
    changed = await api.put("/agents/limits", json={"fair_shares": True, "weights": {"big": 3}})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["fair_shares"], changed.json()["weights"]) == (True, {"big": 3})
    holder = (await start(api))["run_id"]
    await began(agent, 1)
    keys = {}
    for _ in range(9):
        keys[(await start(api, on_busy="enqueue", fairness_key="big"))["run_id"]] = "big"
    for _ in range(3):
        keys[(await start(api, on_busy="enqueue", fairness_key="small"))["run_id"]] = "small"
    order = await serve_one_by_one(agent, 13)
    assert order[0] == holder
    granted = [keys[run_id] for run_id in order[1:]]
    # Stride scheduling, 3:1: every four grants while both wait are three and one (a tie goes
    # to the key that waited first).
    assert granted == ["big", "small", "big", "big"] * 3, granted


async def test_a_run_past_its_queue_timeout_ends_and_never_starts(
    held: tuple[httpx.AsyncClient, Held],
) -> None:
    api, agent = held
    holder = (await start(api))["run_id"]
    await began(agent, 1)
    short = (await start(api, on_busy="enqueue", queue_timeout_seconds=1))["run_id"]
    patient = (await start(api, on_busy="enqueue"))["run_id"]
    waiting = (await api.get(f"/agents/status/{short}")).json()
    assert waiting["queue_expires_at"] is not None
    expired = await wait_for_state(api, short, "ERROR", timeout=60)
    assert expired["error"] == "expired in queue"
    assert expired["started_at"] is None
    assert (await api.get(f"/agents/status/{patient}")).json()["queue_position"] == 1
    agent.released[holder].set()
    await began(agent, 2)
    agent.released[patient].set()
    await wait_for_state(api, patient, "DONE", timeout=60)
    assert short not in agent.began


async def test_attach_answers_the_open_run_of_the_same_request(
    held: tuple[httpx.AsyncClient, Held],
) -> None:
    api, agent = held
    holder = (await start(api))["run_id"]
    await began(agent, 1)
    attached = await start(api, 200, on_busy="attach")
    assert (attached["run_id"], attached["attached"]) == (holder, True)
    queued = await start(api, on_busy="attach", user_id=OTHER_USER)
    assert (queued["attached"], queued["queue_position"]) == (False, 1)
    again = await start(api, 200, on_busy="attach", user_id=OTHER_USER)
    assert (again["run_id"], again["queue_position"]) == (queued["run_id"], 1)
    agent.released[holder].set()
    agent.released[queued["run_id"]].set()
    await wait_for_state(api, queued["run_id"], "DONE", timeout=60)
    assert agent.began == [holder, queued["run_id"]]
    # Nothing of that request is open now: attach starts one.
    fresh = await start(api, on_busy="attach")
    assert fresh["run_id"] not in (holder, queued["run_id"])


async def test_a_waiting_run_has_an_eta_once_durations_are_known(
    held: tuple[httpx.AsyncClient, Held],
) -> None:
    api, agent = held
    first = (await start(api))["run_id"]
    await began(agent, 1)
    agent.released[first].set()
    await wait_for_state(api, first, "DONE", timeout=60)
    holder = (await start(api))["run_id"]
    await began(agent, 2)
    queued = (await start(api, on_busy="enqueue"))["run_id"]
    waiting = (await api.get(f"/agents/status/{queued}")).json()
    assert waiting["slot_holders"] == [holder]
    assert isinstance(waiting["eta_seconds"], int | float), waiting
    assert waiting["eta_seconds"] >= 0
    agent.released[holder].set()
    agent.released[queued].set()
    await wait_for_state(api, queued, "DONE", timeout=60)


async def test_replace_stops_the_oldest_agent_and_takes_its_slot_before_the_queue(
    held: tuple[httpx.AsyncClient, Held],
) -> None:
    api, agent = held
    holder = (await start(api))["run_id"]
    await began(agent, 1)
    waiting = (await start(api, on_busy="enqueue"))["run_id"]
    replacing = await start(api, on_busy="replace", user_id=OTHER_USER)
    assert (replacing["replaced_run_id"], replacing["queue_position"]) == (holder, 1)

    replaced = await wait_for_state(api, holder, "ERROR", timeout=60)
    assert replaced["replaced_by"] == replacing["run_id"]
    assert replaced["error"] == "cancelled"
    order = await began(agent, 2)
    assert order == [holder, replacing["run_id"]]
    # The replaced agent had stopped before its replacement began: never both at once.
    assert agent.spans[holder][1] <= agent.begun_at[replacing["run_id"]]
    agent.released[replacing["run_id"]].set()
    agent.released[waiting].set()
    await wait_for_state(api, waiting, "DONE", timeout=60)
    assert agent.began == [holder, replacing["run_id"], waiting]


@pytest.mark.parametrize(
    "body",
    [
        {"priority": 0},
        {"priority": 6},
        {"priority": "1"},
        {"fairness_key": ""},
        {"fairness_key": "a b"},
        {"queue_timeout_seconds": 0},
        {"queue_timeout_seconds": -1},
        {"queue_timeout_seconds": "10"},  # was taken as 10 seconds (a new-user trial)
        {"queue_timeout_seconds": True},
        {"on_busy": "replace-all"},
    ],
)
async def test_a_bad_admission_field_is_a_422(api: httpx.AsyncClient, body: object) -> None:
    request = {"agent_type": "policy-checker", "user_id": USER_ID, **body}  # type: ignore[dict-item]
    answer = await api.post("/agents/run", json=request)
    assert answer.status_code == 422, answer.text
