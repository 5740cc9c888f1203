"""An admit's answer hangs on the coordinator's history, never on the time of the task it is
decided in (chaos seed 68891).

A worker's first run of a workflow task may see the time of the task before it (Temporal's
Python SDK 1.35); a replay sees the task's own time. In 68891, after a server restart, two
admits read the settings and were decided in the next task: in time by the clock the worker
saw, so answered QUEUED with run ids minted. The replay saw that task's later time and decided
one EXPIRED, so minted no id for it, and every later run id in the replayed state went to the
request after the one it was answered to: a run granted twice, a run lost, a run DONE with no
agent. Temporal checks a replay's commands, and they were the same: nothing flagged it.

Here a real coordinator on the real server decides an admit after a read of its own; then the
time of the task it was decided in is moved past the request's ``not_after`` in the recorded
history, as that worker saw it the other way round. Replayed on the workers' code, every update
must be answered as the history records (chaos/replays.py compares them). Before the fix the
admit was decided EXPIRED on replay.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta
from typing import Any

import httpx
from temporalio.client import Client, WorkflowHistory

from agent_runner.contract import LIMITS_CHANGED
from agent_runner.settings import Settings
from chaos.replays import new_replayer, replay_one
from tests.helpers import start_run

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

    completed = next(i for i, event in enumerate(events) if _answers_run(event, queued))
    update_id = _attributes(events[completed])["meta"]["updateId"]
    accepted = next(
        i
        for i, event in enumerate(events)
        if event["eventType"] == ACCEPTED
        and _attributes(event)["acceptedRequest"]["meta"]["updateId"] == update_id
    )
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
