"""Property (j): every workflow history the run made replays on the workers' code.

A worker that restarts or loses an execution from its cache replays its history; one that no
longer replays fails its workflow tasks, and its queue or run is stuck. The fault run makes
histories no hand-picked test makes (workers paused inside a task, server restarts, starts from
other clients), so after the run, on its own server, each execution's history is replayed with
``temporalio.worker.Replayer`` in the workers' sandbox. ``python -m chaos.replays DIR`` does it
again for a run's directory (its server started on its database file) and records the result in
its ``history.json``, for ``python -m chaos.recheck``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from temporalio.client import Client
from temporalio.worker import Replayer

from chaos.history import History, Replays, read_history, write_history
from chaos.verdicts import PropertyResult
from devtools.processes import DevServer, free_port
from worker import WORKFLOW_RUNNER
from workflows.agent_run import AgentRunWorkflow
from workflows.scope import AgentScopeWorkflow
from workflows.settings import AgentRunnerSettingsWorkflow

NAME = "replays"
TITLE = "every workflow history replays on the workers' code"


async def replay_all(client: Client) -> Replays:
    """Replay every execution on the server, open or closed."""
    replayer = Replayer(
        workflows=[AgentRunWorkflow, AgentScopeWorkflow, AgentRunnerSettingsWorkflow],
        workflow_runner=WORKFLOW_RUNNER,
    )
    checked = 0
    failures: list[str] = []
    async for execution in client.list_workflows():
        history = await client.get_workflow_handle(
            execution.id, run_id=execution.run_id
        ).fetch_history()
        replayed = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        checked += 1
        if replayed.replay_failure is not None:
            failures.append(
                f"{execution.id} ({execution.run_id}): {str(replayed.replay_failure)[:300]}"
            )
    return Replays(checked=checked, failures=failures)


def check_replays(history: History) -> PropertyResult:
    if history.replays is None:
        return PropertyResult(
            name=NAME,
            title=TITLE,
            checked=0,
            notes=["not recorded: run `python -m chaos.replays DIR`, then recheck"],
        )
    return PropertyResult(
        name=NAME,
        title=TITLE,
        checked=history.replays.checked,
        violations=list(history.replays.failures),
    )


async def _replay_directory(directory: Path) -> Replays:
    with tempfile.TemporaryDirectory() as scratch:
        server = DevServer(
            db_file=directory / "temporal.db",
            port=free_port(),
            ui_port=None,
            log_path=Path(scratch) / "temporal.log",
        )
        await asyncio.to_thread(server.start)
        try:
            return await replay_all(await Client.connect(server.address))
        finally:
            await asyncio.to_thread(server.stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos.replays", description=__doc__)
    parser.add_argument("directory", type=Path, help="the run's directory")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    path = args.directory / "history.json"
    replays = asyncio.run(_replay_directory(args.directory))
    write_history(read_history(path).model_copy(update={"replays": replays}), path)
    print(f"{replays.checked} executions replayed, {len(replays.failures)} failed")
    for failure in replays.failures:
        print(failure)
    return 0 if not replays.failures else 1


if __name__ == "__main__":
    sys.exit(main())
