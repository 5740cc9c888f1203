"""The real ``temporal`` command line, as an operator would use it against the run's server:
list the open agent runs, terminate one. Never an SDK call in its place: what the CLI does (a
terminate runs no workflow code) is the fault."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from devtools.processes import temporal_cli

OPEN_RUNS_QUERY = "WorkflowType='AgentRunWorkflow' AND ExecutionStatus='Running'"
CLI_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Execution:
    workflow_id: str
    run_id: str


@dataclass(frozen=True)
class CliResult:
    returncode: int | None
    output: str


async def run_cli(address: str, *args: str) -> CliResult:
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
        return CliResult(None, "timed out")
    return CliResult(process.returncode, output.decode(errors="replace"))


async def open_agent_runs(address: str) -> list[Execution]:
    """The open ``AgentRunWorkflow`` executions, as visibility lists them."""
    result = await run_cli(address, "workflow", "list", "--query", OPEN_RUNS_QUERY, "-o", "jsonl")
    if result.returncode != 0:
        return []
    executions = []
    for line in result.output.splitlines():
        try:
            execution = json.loads(line)["execution"]
        except (ValueError, KeyError, TypeError):
            continue
        executions.append(Execution(execution["workflowId"], execution["runId"]))
    return executions


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
