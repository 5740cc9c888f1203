"""A worker process whose workflows fail their workflow tasks, for tests/test_logging.py.

Our worker's own workflow validates its input, so nothing a client sends makes its task fail;
this process logs the way ``worker.py`` does (``configure_logging``, which also keeps the SDK
loggers' messages free of their info suffix) and serves workflows whose code raises inside the
sandbox: one touches a restricted module (the sandbox raises), one raises a plain exception.
Each failure is logged by the SDK from inside the sandbox, with its traceback.

Run: ``python -m tests.task_failure_worker`` with the settings in the environment.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    import asyncio
    import signal

    from temporalio.worker import Worker

    from agent_runner.connection import connect, create_runtime
    from agent_runner.logs import configure_logging
    from agent_runner.process import exit_now
    from agent_runner.settings import Settings, get_settings

RESTRICTED_WORKFLOW = "TouchesARestrictedModule"
RAISING_WORKFLOW = "RaisesInWorkflowCode"


@workflow.defn(name=RESTRICTED_WORKFLOW)
class TouchesARestrictedModule:
    @workflow.run
    async def run(self) -> None:
        import os  # the sandbox's os: calling into it raises RestrictedWorkflowAccessError

        os.getcwd()


@workflow.defn(name=RAISING_WORKFLOW)
class RaisesInWorkflowCode:
    @workflow.run
    async def run(self, message: str) -> None:
        # Not a Temporal failure: the workflow task fails (and is retried), the run stays open.
        raise RuntimeError(message)


async def main(settings: Settings) -> None:
    client = await connect(settings, runtime=create_runtime())
    worker = Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[TouchesARestrictedModule, RaisesInWorkflowCode],
    )
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    async with worker:
        await stop.wait()


if __name__ == "__main__":
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(main(settings))
    exit_now(0)  # as worker.py: no interpreter teardown under the SDK's threads
