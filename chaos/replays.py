"""Property (j): every workflow history the run made replays on the workers' code, and gives on
replay the answers it gave.

A worker that restarts or loses an execution from its cache replays its history; one that no
longer replays fails its workflow tasks, and its queue or run is stuck. The fault run makes
histories no hand-picked test makes (workers paused inside a task, server restarts, starts from
other clients), so after the run, on its own server, each execution's history is replayed with
``temporalio.worker.Replayer`` in the workers' sandbox. ``python -m chaos.replays DIR`` does it
again for a run's directory (its server started on its database file) and records the result in
its ``history.json``, for ``python -m chaos.recheck``.

A replay that raises no error may still have gone otherwise: Temporal checks the commands a
replay makes, not the answers its update handlers give, nor the state they leave. So each update's
answer on replay is compared with the one its history records (chaos seed 68891: a coordinator
replayed an admit as EXPIRED that it had answered QUEUED, and every run id after it went to
another request, with the same commands).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.converter import default as default_converter
from temporalio.worker import (
    HandleUpdateInput,
    Interceptor,
    Replayer,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from chaos.history import History, Replays, read_history, write_history
from chaos.verdicts import PropertyResult
from devtools.processes import DevServer, free_port
from worker import WORKFLOW_RUNNER
from workflows.agent_run import AgentRunWorkflow
from workflows.scope import AgentScopeWorkflow
from workflows.settings import AgentRunnerSettingsWorkflow

NAME = "replays"
TITLE = "every workflow history replays on the workers' code"


# What each update's handler answered on replay, by update id (the workers' sandbox passes
# this module through, so its interceptor writes here).
_ANSWERED: dict[str, Any] = {}


class _RecordAnswers(Interceptor):
    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return _AnswersInbound


class _AnswersInbound(WorkflowInboundInterceptor):
    async def handle_update_handler(self, input: HandleUpdateInput) -> Any:
        answer = await super().handle_update_handler(input)
        if workflow.unsafe.is_replaying():
            _ANSWERED[input.id] = answer
        return answer


def new_replayer() -> Replayer:
    """The workers' workflows in the workers' sandbox, recording their updates' answers."""
    return Replayer(
        workflows=[AgentRunWorkflow, AgentScopeWorkflow, AgentRunnerSettingsWorkflow],
        workflow_runner=WORKFLOW_RUNNER,
        interceptors=[_RecordAnswers()],
    )


async def replay_one(replayer: Replayer, history: WorkflowHistory) -> str | None:
    """Why ``history`` does not replay as it ran (None if it does): the replay failed, or an
    update was answered otherwise than the history records."""
    _ANSWERED.clear()
    replayed = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    if replayed.replay_failure is not None:
        return str(replayed.replay_failure)[:300]
    converter = default_converter().payload_converter
    for event in history.events:
        if event.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED:
            continue
        completed = event.workflow_execution_update_completed_event_attributes
        update_id = completed.meta.update_id
        if not completed.outcome.HasField("success"):
            continue
        recorded = converter.from_payloads(list(completed.outcome.success.payloads))
        if update_id not in _ANSWERED:
            return f"update {update_id} was not answered on replay"
        again = converter.from_payloads(converter.to_payloads([_ANSWERED[update_id]]))
        if not _same(again, recorded):
            return (
                f"update {update_id} answered otherwise on replay: {str(again)[:300]}, "
                f"recorded {str(recorded)[:300]}"
            )
    return None


def _same(again: object, recorded: object) -> bool:
    """Whether an answer on replay is the recorded one. A field the recorded answer lacks was
    added to its type since (a history recorded by older code): not compared."""
    if isinstance(recorded, dict) and isinstance(again, dict):
        return all(key in again and _same(again[key], value) for key, value in recorded.items())
    if isinstance(recorded, list) and isinstance(again, list):
        return len(again) == len(recorded) and all(map(_same, again, recorded))
    return again == recorded


async def replay_all(client: Client) -> Replays:
    """Replay every execution on the server, open or closed."""
    replayer = new_replayer()
    checked = 0
    failures: list[str] = []
    async for execution in client.list_workflows():
        history = await client.get_workflow_handle(
            execution.id, run_id=execution.run_id
        ).fetch_history()
        failure = await replay_one(replayer, history)
        checked += 1
        if failure is not None:
            failures.append(f"{execution.id} ({execution.run_id}): {failure}")
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
