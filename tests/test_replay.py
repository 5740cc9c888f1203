"""Recorded histories of all three workflows in every kind of ending, replayed against today's
workflow code: a change that would break the executions open when it is deployed (a
non-deterministic change) fails here. Record them again with `make histories` only for a change
meant to be incompatible."""

from __future__ import annotations

import json

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from devtools.processes import ROOT
from worker import WORKFLOW_RUNNER
from workflows.agent_run import AgentRunWorkflow
from workflows.scope import AgentScopeWorkflow
from workflows.settings import AgentRunnerSettingsWorkflow

HISTORIES = sorted((ROOT / "tests" / "histories").glob("*.json"))


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
    replayer = Replayer(
        workflows=[AgentRunWorkflow, AgentScopeWorkflow, AgentRunnerSettingsWorkflow],
        # The sandbox as the workers run it.
        workflow_runner=WORKFLOW_RUNNER,
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure
