"""Recorded histories of every kind of ending, replayed against today's workflow code: a change
that would break the runs open when it is deployed (a non-deterministic change) fails here.
Record them again with `make histories` only for a change meant to be incompatible."""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from devtools.processes import ROOT
from workflows import AgentQueueWorkflow, AgentRunWorkflow

HISTORIES = sorted((ROOT / "tests" / "histories").glob("*.json"))


def test_every_kind_of_ending_has_a_history() -> None:
    names = {
        path.stem.rsplit("-", 1)[0] if path.stem[-1].isdigit() else path.stem for path in HISTORIES
    }
    assert {
        "done",
        "error-after-retries",
        "cancelled",
        "terminated",
        "cli-inputs",
        "queue",
    } <= names


@pytest.mark.parametrize(
    ("name", "text"),
    [(path.stem, path.read_text()) for path in HISTORIES],
    ids=[path.stem for path in HISTORIES],
)
async def test_a_recorded_history_replays_on_todays_code(name: str, text: str) -> None:
    history = WorkflowHistory.from_json(name, text)
    replayer = Replayer(
        workflows=[AgentRunWorkflow, AgentQueueWorkflow],
        # As in worker.py: the tracing interceptor may import opentelemetry in the sandbox.
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules("opentelemetry")
        ),
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure
