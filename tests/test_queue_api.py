"""The queue through the REST API and as Prometheus sees it, from a real API."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from tests.helpers import USER_ID, app_client, assert_eventually, in_process_worker, make_settings


def gauge(text: str, name: str) -> float:
    [line] = [line for line in text.splitlines() if line.startswith(name + "{")]
    return float(line.rsplit(" ", 1)[1])


async def test_metrics_show_slots_in_use_and_runs_waiting(
    temporal_client: Client, temporal_address: str
) -> None:
    settings = make_settings(
        temporal_address,
        task_queue=f"gauges-{uuid.uuid4()}",
        agent_slots=2,
        agent_duration_seconds=30.0,
    )
    async for api in app_client(settings):
        async with in_process_worker(temporal_client, settings):
            body = {"agent_type": "policy-checker", "user_id": USER_ID, "on_busy": "enqueue"}
            run_ids = [
                (await api.post("/agents/run", json=body)).json()["run_id"] for _ in range(5)
            ]

            async def two_working_three_waiting(api: httpx.AsyncClient = api) -> None:
                text = (await api.get("/metrics")).text
                assert gauge(text, "agent_runner_slots_in_use") == 2
                assert gauge(text, "agent_runner_runs_waiting") == 3
                assert gauge(text, "agent_runner_queues_not_empty") == 1
                assert gauge(text, "agent_runner_slots_per_scope") == 2

            await assert_eventually(two_working_three_waiting, timeout=30, interval=1.0)
            for run_id in reversed(run_ids):
                await api.post(f"/agents/runs/{run_id}/cancel")


async def test_the_queue_endpoint_lists_running_and_waiting_runs_in_order(
    temporal_client: Client, temporal_address: str
) -> None:
    settings = make_settings(
        temporal_address, task_queue=f"queue-api-{uuid.uuid4()}", agent_duration_seconds=30.0
    )
    body = {"agent_type": "policy-checker", "user_id": USER_ID, "on_busy": "enqueue"}
    async for api in app_client(settings):
        async with in_process_worker(temporal_client, settings):
            answers = [(await api.post("/agents/run", json=body)).json() for _ in range(3)]
            assert [a["queue_position"] for a in answers] == [None, 1, 2]
            running_id, first_id, second_id = (a["run_id"] for a in answers)
            # A start that would not wait never jumps the queue.
            refused = await api.post("/agents/run", json={**body, "on_busy": "reject"})
            assert refused.status_code == 409

            view = (await api.get("/agents/queue")).json()
            assert [run["run_id"] for run in view["running"]] == [running_id]
            assert [
                (r["run_id"], r["queue_position"], r["waiting_for"]) for r in view["queued"]
            ] == [
                (first_id, 1, "queue"),
                (second_id, 2, "queue"),
            ]
            # Cancelling a waiting run ends it at once; the one behind moves up.
            cancelled = await api.post(f"/agents/runs/{first_id}/cancel")
            assert cancelled.status_code == 200, cancelled.text
            assert cancelled.json()["state"] == "ERROR"
            second = (await api.get(f"/agents/status/{second_id}")).json()
            assert (second["state"], second["queue_position"]) == ("PENDING", 1)
            for run_id in (second_id, running_id):
                await api.post(f"/agents/runs/{run_id}/cancel")


# Text no scope is named by: NUL, spaces, ':' (the separator of workflow ids), empty.
NOT_A_SCOPE = ["\x00", f"{USER_ID}\x00", f" {USER_ID}", "a b", f"{USER_ID}:slot-0", ":", ""]
SCOPE_OF_KIND = {"global": "global", "user_id": USER_ID, "agent_type": "policy-checker"}
# Scopes of the other kinds ("global" is a well-formed agent type).
OTHER_KINDS = {
    "global": [USER_ID, "policy-checker"],
    "user_id": ["global", "policy-checker"],
    "agent_type": [USER_ID],
}


@pytest.mark.parametrize("kind", ["global", "user_id", "agent_type"])
async def test_a_queue_scope_that_names_no_scope_is_422(temporal_address: str, kind: str) -> None:
    """Scale issue, finding 7: `?scope=` took NUL, spaces and ':'."""
    settings = make_settings(
        temporal_address, task_queue=f"queue-scope-{uuid.uuid4()}", agent_scope=kind
    )
    async for api in app_client(settings):
        for scope in [*NOT_A_SCOPE, *OTHER_KINDS[kind]]:
            answer = await api.get("/agents/queue", params={"scope": scope})
            assert answer.status_code == 422, (kind, scope, answer.text)
            assert f"AGENT_SCOPE={kind}" in answer.json()["detail"], answer.text
        named = await api.get("/agents/queue", params={"scope": SCOPE_OF_KIND[kind]})
        assert named.status_code == 200, named.text
        assert named.json() == {"running": [], "queued": [], "next_page_token": None}


async def pages(api: httpx.AsyncClient, **params: object) -> list[dict[str, Any]]:
    """Every page of /agents/queue, following the tokens."""
    found: list[dict[str, Any]] = []
    token = None
    while True:
        answer = await api.get("/agents/queue", params={**params, "page_token": token or ""})
        assert answer.status_code == 200, answer.text
        found.append(answer.json())
        token = found[-1]["next_page_token"]
        if token is None:
            return found


def ids(page: dict[str, Any]) -> list[str]:
    return [run["run_id"] for run in page["running"] + page["queued"]]


async def test_the_queue_is_read_a_page_at_a_time(
    temporal_client: Client, temporal_address: str
) -> None:
    """Scale issue, finding 3: /agents/queue read every scope in one answer (2,000 scopes:
    40-55 s, 1 MB). A page holds at most `limit` runs and costs one view per scope on it."""
    settings = make_settings(
        temporal_address,
        task_queue=f"queue-pages-{uuid.uuid4()}",
        agent_scope="user_id",
        agent_duration_seconds=60.0,
    )
    users = [str(uuid.uuid4()) for _ in range(4)]
    async for api in app_client(settings):
        async with in_process_worker(temporal_client, settings):
            started: dict[str, list[str]] = {}
            for user in users:
                body = {"agent_type": "policy-checker", "user_id": user, "on_busy": "enqueue"}
                started[user] = [
                    (await api.post("/agents/run", json=body)).json()["run_id"] for _ in range(3)
                ]
            every = {run_id for run_ids in started.values() for run_id in run_ids}

            async def all_listed(
                api: httpx.AsyncClient = api, every: set[str] = every
            ) -> list[dict[str, Any]]:
                paged = await pages(api, limit=5)
                listed = [run_id for page in paged for run_id in ids(page)]
                assert sorted(listed) == sorted(every), paged
                return paged

            paged = await assert_eventually(all_listed, timeout=30, interval=1.0)
            assert [len(ids(page)) for page in paged] == [5, 5, 2]
            # A last page that is exactly full is the last: no empty page after it.
            assert [len(ids(page)) for page in await pages(api, limit=4)] == [4, 4, 4]
            assert [len(ids(page)) for page in await pages(api, limit=1)] == [1] * 12
            # Each user's runs in their order: the holder, then its queue.
            listed = [run_id for page in paged for run_id in ids(page)]
            for run_ids in started.values():
                assert sorted(run_ids, key=listed.index) == run_ids

            # One scope alone, a run at a time.
            user = users[0]
            one = await pages(api, scope=user, limit=1)
            assert [ids(page) for page in one] == [[run_id] for run_id in started[user]]
            assert one[0]["running"]
            assert not one[1]["running"]

            # A token is only good for the listing it came from.
            token = (await api.get("/agents/queue", params={"limit": 1})).json()
            other = await api.get(
                "/agents/queue", params={"scope": user, "page_token": token["next_page_token"]}
            )
            assert other.status_code == 400, other.text
            runs_token = (await api.get("/agents/runs", params={"limit": 1})).json()
            for path, token_of_another in (
                ("/agents/runs", token["next_page_token"]),
                ("/agents/queue", runs_token["next_page_token"]),
            ):
                crossed = await api.get(path, params={"page_token": token_of_another})
                assert crossed.status_code == 400, crossed.text
            other_filter = await api.get(
                "/agents/runs",
                params={"page_token": runs_token["next_page_token"], "state": "RUNNING"},
            )
            assert other_filter.status_code == 400, other_filter.text
            for path in ("/agents/queue", "/agents/runs"):
                for forged_token in ("e30.AAAA", "a.\u00e9", "\u00e9"):
                    forged = await api.get(path, params={"page_token": forged_token})
                    assert forged.status_code == 400, (path, forged_token, forged.text)
            for run_id in every:
                await api.post(f"/agents/runs/{run_id}/cancel")


async def test_a_scope_that_closes_between_pages_hides_no_other_scope(
    temporal_client: Client, temporal_address: str
) -> None:
    """The hostile review of the paging: a cursor that was a position on a re-fetched page
    skipped every scope after one that closed (and shifted when one opened)."""
    settings = make_settings(
        temporal_address,
        task_queue=f"queue-close-{uuid.uuid4()}",
        agent_scope="user_id",
        agent_duration_seconds=60.0,
    )
    async for api in app_client(settings):
        async with in_process_worker(temporal_client, settings):
            started: dict[str, list[str]] = {}
            for _ in range(4):
                user = str(uuid.uuid4())
                body = {"agent_type": "policy-checker", "user_id": user, "on_busy": "enqueue"}
                started[user] = [
                    (await api.post("/agents/run", json=body)).json()["run_id"] for _ in range(3)
                ]
            owner = {run_id: user for user, run_ids in started.items() for run_id in run_ids}

            async def in_order(
                api: httpx.AsyncClient = api, owner: dict[str, str] = owner
            ) -> list[str]:
                listed = [run_id for page in await pages(api, limit=100) for run_id in ids(page)]
                assert sorted(listed) == sorted(owner), listed
                return list(dict.fromkeys(owner[run_id] for run_id in listed))

            users = await assert_eventually(in_order, timeout=30, interval=1.0)
            first = (await api.get("/agents/queue", params={"limit": 3})).json()
            assert {owner[run_id] for run_id in ids(first)} == {users[0]}
            # The scope the token resumes at closes: its runs are cancelled.
            for run_id in started[users[1]]:
                await api.post(f"/agents/runs/{run_id}/cancel")

            async def closed(
                api: httpx.AsyncClient = api,
                owner: dict[str, str] = owner,
                users: list[str] = users,
            ) -> None:
                answer = await api.get("/agents/queue", params={"scope": users[1]})
                assert ids(answer.json()) == [], answer.text
                listed = [run_id for page in await pages(api, limit=100) for run_id in ids(page)]
                assert not {owner[run_id] for run_id in listed} & {users[1]}, listed

            await assert_eventually(closed, timeout=60, interval=1.0)
            rest: list[str] = []
            token = first["next_page_token"]
            while token is not None:
                page = await api.get("/agents/queue", params={"limit": 3, "page_token": token})
                assert page.status_code == 200, page.text
                rest += ids(page.json())
                token = page.json()["next_page_token"]
            assert sorted(rest) == sorted(started[users[2]] + started[users[3]]), rest

            # A token inside a scope (its holder and one waiting run shown) whose scope then
            # closes: the next page starts at the following scope, from its first run, and
            # pages through it with its own counts, not the closed scope's.
            inside = (await api.get("/agents/queue", params={"limit": 2})).json()
            closing = owner[ids(inside)[0]]
            for run_id in started[closing]:
                await api.post(f"/agents/runs/{run_id}/cancel")

            async def gone(
                api: httpx.AsyncClient = api, owner: dict[str, str] = owner, closing: str = closing
            ) -> None:
                listed = [run_id for page in await pages(api, limit=100) for run_id in ids(page)]
                assert closing not in {owner[run_id] for run_id in listed}, listed

            await assert_eventually(gone, timeout=60, interval=1.0)
            after: list[str] = []
            token = inside["next_page_token"]
            while token is not None:
                page = await api.get("/agents/queue", params={"limit": 1, "page_token": token})
                after += ids(page.json())
                token = page.json()["next_page_token"]
            still_open = [u for u in users if u not in (users[1], closing)]
            assert sorted(after) == sorted(r for u in still_open for r in started[u]), after
            for run_id in owner:
                await api.post(f"/agents/runs/{run_id}/cancel")
