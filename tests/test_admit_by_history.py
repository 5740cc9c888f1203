"""An admit's answer hangs on the coordinator's history, never on the time of the task it is
decided in (chaos seed 68891).

A worker's first run of a workflow task may see the time of the task before it (Temporal's
Python SDK 1.35); a replay sees the task's own time. In 68891, after a server restart, two
admits read the settings and were decided in the next task: in time by the clock the worker
saw, so answered QUEUED with run ids minted. The replay saw that task's later time and decided
one EXPIRED, so minted no id for it, and every later run id in the replayed state went to the
request after the one it was answered to: a run granted twice, a run lost, a run DONE with no
agent. Temporal checks a replay's commands, and they were the same: nothing flagged it.

Here a real coordinator on the real server decides admits; then the time of the task an admit
was decided in is moved past its ``not_after`` in the recorded history, as that worker saw it the
other way round. Replayed on the workers' code, every update must be answered as the history
records (chaos/replays.py compares them). Before the fix such an admit was decided EXPIRED on
replay: one decided after a read of its own, then (found by a review of the first fix) one
decided in the task it arrived in. The clock is now read only by the admit's validator, which
refuses an admit come past its ``not_after`` before it is taken in, and runs on first run only.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from temporalio.client import Client, WorkflowHistory, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from agent_runner.contract import (
    ADMIT,
    ADMIT_EXPIRED,
    LIMITS_CHANGED,
    Admission,
    AdmitRequest,
    OnBusy,
    RunRequest,
)
from agent_runner.settings import Settings
from chaos.replays import new_replayer, replay_one
from tests.helpers import USER_ID, start_run

ACCEPTED = "EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED"
COMPLETED = "EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED"
TASK_STARTED = "EVENT_TYPE_WORKFLOW_TASK_STARTED"


async def test_an_admit_decided_after_its_read_is_decided_alike_whatever_the_tasks_time(
    idle_api: httpx.AsyncClient, idle_settings: Settings, temporal_client: Client
) -> None:
    await start_run(idle_api)  # holds the slot (no agent is served): the coordinator stays
    coordinator = temporal_client.get_workflow_handle(idle_settings.workflow_id)
    # Told the limits changed, it reads them before it decides the next admit.
    await coordinator.signal(LIMITS_CHANGED)
    queued = await start_run(idle_api, on_busy="enqueue")
    recorded = (await coordinator.fetch_history()).to_json_dict()
    events: list[dict[str, Any]] = recorded["events"]

    accepted, completed = _admit_of(events, queued)
    read = [
        event
        for event in events[accepted:completed]
        if event["eventType"] == "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED"
        and _attributes(event)["activityType"]["name"] == "read_settings"
    ]
    assert read, "the admit was decided without a read of its own: nothing to move"
    decided_in = max(i for i in range(completed) if events[i]["eventType"] == TASK_STARTED)
    assert decided_in > accepted, "decided in the task it arrived in"
    request = _attributes(events[accepted])["acceptedRequest"]["input"]["args"]
    not_after = datetime.fromisoformat(_first_request(request)["not_after"])
    events[decided_in]["eventTime"] = (not_after + timedelta(seconds=10)).isoformat()

    history = WorkflowHistory.from_json(idle_settings.workflow_id, recorded)
    assert await replay_one(new_replayer(), history) is None

    # And the comparison sees an answer that differs (the recorded one changed here).
    for payload in _attributes(events[completed])["outcome"]["success"]["payloads"]:
        payload["data"] = _encoded([[{"admission": "expired", "request_id": "elsewhere"}]])
    changed = WorkflowHistory.from_json(idle_settings.workflow_id, recorded)
    failure = await replay_one(new_replayer(), changed)
    assert failure is not None
    assert "answered otherwise on replay" in failure, failure


async def test_an_admit_decided_in_the_task_it_arrived_in_is_decided_alike_whatever_its_time(
    idle_api: httpx.AsyncClient, idle_settings: Settings, temporal_client: Client
) -> None:
    await start_run(idle_api)
    coordinator = temporal_client.get_workflow_handle(idle_settings.workflow_id)
    queued = await start_run(idle_api, on_busy="enqueue")  # the limits are fresh: no read
    recorded = (await coordinator.fetch_history()).to_json_dict()
    events: list[dict[str, Any]] = recorded["events"]

    accepted, completed = _admit_of(events, queued)
    arrived_in = max(i for i in range(accepted) if events[i]["eventType"] == TASK_STARTED)
    assert arrived_in == max(
        i for i in range(completed) if events[i]["eventType"] == TASK_STARTED
    ), "decided after a read: the other test's case"
    request = _attributes(events[accepted])["acceptedRequest"]["input"]["args"]
    not_after = datetime.fromisoformat(_first_request(request)["not_after"])
    events[arrived_in]["eventTime"] = (not_after + timedelta(seconds=10)).isoformat()

    history = WorkflowHistory.from_json(idle_settings.workflow_id, recorded)
    assert await replay_one(new_replayer(), history) is None


async def test_an_admit_past_its_not_after_is_refused_untaken_and_a_question_is_answered(
    idle_api: httpx.AsyncClient, idle_settings: Settings, temporal_client: Client
) -> None:
    await start_run(idle_api)  # the coordinator runs, its slot held
    coordinator = temporal_client.get_workflow_handle(idle_settings.workflow_id)
    gone = datetime.now(UTC) - timedelta(seconds=1)

    def request(not_after: datetime) -> AdmitRequest:
        return AdmitRequest(
            request_id=f"request:{uuid.uuid4()}",
            run=RunRequest(agent_type="policy-checker", user_id=USER_ID),
            on_busy=OnBusy.ENQUEUE,
            not_after=not_after,
        )

    async def admit(requests: list[AdmitRequest], update_id: str) -> list[Any]:
        answers: list[Any] = await coordinator.execute_update(
            ADMIT.name, requests, id=update_id, result_type=ADMIT.result_type
        )
        return answers

    late = request(gone)
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await admit([late], "late-admit")
    assert isinstance(refused.value.cause, ApplicationError)
    assert refused.value.cause.type == ADMIT_EXPIRED

    # A not_after with no UTC offset (the temporal CLI lets one through) is refused plainly.
    naive = replace(late, not_after=gone.replace(tzinfo=None))
    with pytest.raises(WorkflowUpdateFailedError) as unclear:
        await admit([naive], "naive-admit")
    assert isinstance(unclear.value.cause, ApplicationError)
    assert "UTC offset" in unclear.value.cause.message

    # Its question, asked after the caller gave up: nothing was made of it.
    [unknown] = await admit([replace(late, question=True)], "late-question")
    assert unknown.admission == Admission.EXPIRED

    # One decided in time, asked again past its not_after: the answer it was given.
    in_time = request(datetime.now(UTC) + timedelta(seconds=30))
    [first] = await admit([in_time], "in-time")
    assert first.admission == Admission.QUEUED
    [again] = await admit([replace(in_time, not_after=gone, question=True)], "its-question")
    assert (again.admission, again.run_id) == (Admission.QUEUED, first.run_id)
    # An API from before the question field asks again with the try itself: taken in past its
    # not_after, as it was answered already (a review of the validator: it was refused).
    [repeat] = await admit([replace(in_time, not_after=gone)], "its-repeat")
    assert (repeat.admission, repeat.run_id) == (Admission.QUEUED, first.run_id)

    history = (await coordinator.fetch_history()).to_json_dict()
    taken = {
        _attributes(event)["acceptedRequest"]["meta"]["updateId"]
        for event in history["events"]
        if event["eventType"] == ACCEPTED
    }
    assert "late-admit" not in taken
    assert {"late-question", "in-time", "its-question", "its-repeat"} <= taken


def _admit_of(events: list[dict[str, Any]], run_id: str) -> tuple[int, int]:
    """Where the admit that answered ``run_id`` was accepted, and where it was completed."""
    completed = next(i for i, event in enumerate(events) if _answers_run(event, run_id))
    update_id = _attributes(events[completed])["meta"]["updateId"]
    accepted = next(
        i
        for i, event in enumerate(events)
        if event["eventType"] == ACCEPTED
        and _attributes(event)["acceptedRequest"]["meta"]["updateId"] == update_id
    )
    return accepted, completed


def _attributes(event: dict[str, Any]) -> dict[str, Any]:
    return next(value for key, value in event.items() if key.endswith("Attributes"))


def _answers_run(event: dict[str, Any], run_id: str) -> bool:
    if event["eventType"] != COMPLETED:
        return False
    payloads = _attributes(event)["outcome"].get("success", {}).get("payloads", [])
    return any(run_id in _decoded(payload) for payload in payloads)


def _first_request(args: dict[str, Any]) -> dict[str, Any]:
    requests: list[dict[str, Any]] = json.loads(_decoded(args["payloads"][0]))
    return requests[0]


def _decoded(payload: dict[str, Any]) -> str:
    return base64.b64decode(payload.get("data", "")).decode()


def _encoded(value: object) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()
