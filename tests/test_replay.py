"""Recorded histories of all three workflows in every kind of ending, replayed against today's
workflow code: a change that would break the executions open when it is deployed (a
non-deterministic change) fails here. Record them again with `make histories` only for a change
meant to be incompatible."""

from __future__ import annotations

import json

import pytest
from temporalio.client import WorkflowHistory

from chaos.replays import new_replayer, replay_one
from devtools.processes import ROOT

HISTORIES = sorted((ROOT / "tests" / "histories").glob("*.json"))
REPLAYER = new_replayer()


def test_every_kind_of_ending_has_a_history_of_each_workflow() -> None:
    recorded = {tuple(path.stem.rsplit("-", 2)[:2]) for path in HISTORIES}
    endings = {"done", "error-after-retries", "cancelled", "terminated", "queue", "not-granted"}
    workflows = {"AgentRunWorkflow", "AgentScopeWorkflow", "AgentRunnerSettingsWorkflow"}
    assert {(ending, workflow) for ending in endings for workflow in workflows} <= recorded


@pytest.mark.parametrize(
    ("name", "text"),
    [(path.stem, path.read_text()) for path in HISTORIES],
    ids=[path.stem for path in HISTORIES],
)
async def test_a_recorded_history_replays_on_todays_code(name: str, text: str) -> None:
    # The workflows read their own id (a slot's, a scope's), so replay under the recorded one.
    started = json.loads(text)["events"][0]["workflowExecutionStartedEventAttributes"]
    history = WorkflowHistory.from_json(started["workflowId"], text)
    # The sandbox as the workers run it; every update answered on replay as it was recorded
    # (a replay that answers otherwise raises nothing by itself, see chaos/replays.py).
    assert await replay_one(REPLAYER, history) is None
