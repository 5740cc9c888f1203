"""The real ``temporal`` command line, as an operator (or another system with write access to
the namespace) would use it against the run's server. Never an SDK call in its place: what the
CLI does (a terminate runs no workflow code, a forged completion carries no stop key) is the
fault.

The rule: every call is one CLI process with a deadline, and its result (exit code and output)
is returned, never raised: a forged message the server refuses is part of the record, not an
error of the run.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from devtools.processes import temporal_cli

OPEN_RUNS_QUERY = "WorkflowType='AgentRunWorkflow' AND ExecutionStatus='Running'"
CLI_TIMEOUT_SECONDS = 30.0
# How much of a CLI's output a fault record keeps.
OUTPUT_KEPT = 300


@dataclass(frozen=True)
class Execution:
    workflow_id: str
    run_id: str


@dataclass(frozen=True)
class CliResult:
    args: tuple[str, ...]
    returncode: int | None
    output: str
    # Read before the process started and after it ended (the history's clock).
    started: float
    ended: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def record(self) -> dict[str, Any]:
        """What a fault record keeps of the call."""
        return {
            "args": " ".join(self.args)[:OUTPUT_KEPT],
            "exit": self.returncode,
            "output": self.output.strip()[-OUTPUT_KEPT:],
        }


def as_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


async def run_cli(address: str, *args: str) -> CliResult:
    started = time.time()
    process = await asyncio.create_subprocess_exec(
        str(temporal_cli()),
        *args,
        "--address",
        address,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT_SECONDS)
    except TimeoutError:
        process.kill()
        await process.wait()
        return CliResult(args, None, "timed out", started, time.time())
    return CliResult(
        args, process.returncode, output.decode(errors="replace"), started, time.time()
    )


async def list_executions(address: str, query: str) -> list[Execution]:
    """The executions visibility lists for ``query`` (none when the CLI fails)."""
    result = await run_cli(address, "workflow", "list", "--query", query, "-o", "jsonl")
    if not result.ok:
        return []
    executions = []
    for line in result.output.splitlines():
        try:
            execution = json.loads(line)["execution"]
        except (ValueError, KeyError, TypeError):
            continue
        executions.append(Execution(execution["workflowId"], execution["runId"]))
    return executions


async def open_agent_runs(address: str) -> list[Execution]:
    """The open ``AgentRunWorkflow`` executions."""
    return await list_executions(address, OPEN_RUNS_QUERY)


async def execution_of_run(address: str, run_id: str) -> Execution | None:
    """The open execution on a slot that holds the run ``run_id`` (its ``AgentRunId``)."""
    found = await list_executions(address, f"AgentRunId='{run_id}' AND {OPEN_RUNS_QUERY}")
    return found[0] if found else None


async def terminate(address: str, execution: Execution, reason: str) -> CliResult:
    return await run_cli(
        address,
        "workflow",
        "terminate",
        "--workflow-id",
        execution.workflow_id,
        "--run-id",
        execution.run_id,
        "--reason",
        reason,
    )


async def activity_op(
    address: str, command: str, execution: Execution, attempt: int, *more: str
) -> CliResult:
    """``temporal activity <command>`` on attempt ``attempt`` of a run's execution."""
    return await run_cli(
        address,
        "activity",
        command,
        "--activity-id",
        f"attempt-{attempt}",
        "--workflow-id",
        execution.workflow_id,
        "--run-id",
        execution.run_id,
        *more,
    )


async def update(address: str, workflow_id: str, name: str, value: Any) -> CliResult:
    """``temporal workflow update execute`` with one JSON input."""
    return await run_cli(
        address,
        "workflow",
        "update",
        "execute",
        "--workflow-id",
        workflow_id,
        "--name",
        name,
        "--input",
        as_json(value),
        "-o",
        "json",
    )


async def signal(address: str, workflow_id: str, name: str, value: Any) -> CliResult:
    return await run_cli(
        address,
        "workflow",
        "signal",
        "--workflow-id",
        workflow_id,
        "--name",
        name,
        "--input",
        as_json(value),
    )


async def start_workflow(
    address: str, task_queue: str, workflow_type: str, workflow_id: str, value: Any
) -> CliResult:
    return await run_cli(
        address,
        "workflow",
        "start",
        "--type",
        workflow_type,
        "--task-queue",
        task_queue,
        "--workflow-id",
        workflow_id,
        "--input",
        as_json(value),
    )


def update_answer(result: CliResult) -> Any:
    """The decoded answer of an update sent with ``-o json`` (``update execute`` or
    ``execute-update-with-start``); None when it has none."""
    try:
        document = json.loads(result.output)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    return document.get("result", document.get("updateResult"))
