"""Every log line is one JSON object, failures inside workflow code included; no secret is in any
line; each event is logged once (a replayed start is its own event)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import structlog
from temporalio.client import Client

from tests.helpers import (
    ROOT,
    USER_ID,
    ListHandler,
    LoggedProcess,
    app_client,
    assert_eventually,
    make_settings,
    post_run,
    wait_for_state,
)
from tests.task_failure_worker import RAISING_WORKFLOW, RESTRICTED_WORKFLOW


async def test_a_workflow_task_failure_is_logged_as_json_with_its_message(
    temporal_address: str, temporal_client: Client, tmp_path: Path
) -> None:
    settings = make_settings(temporal_address, task_queue=f"task-failures-{uuid.uuid4()}")
    worker = LoggedProcess(
        [sys.executable, "-m", "tests.task_failure_worker"], settings, tmp_path / "worker.log"
    )
    marker = f"workflow code failed on purpose {uuid.uuid4()}"
    handles = [
        await temporal_client.start_workflow(
            RESTRICTED_WORKFLOW, id=f"restricted-{uuid.uuid4()}", task_queue=settings.task_queue
        ),
        await temporal_client.start_workflow(
            RAISING_WORKFLOW, marker, id=f"raising-{uuid.uuid4()}", task_queue=settings.task_queue
        ),
    ]
    try:

        async def both_failures_logged() -> list[str]:
            failures = [
                json.dumps(line)
                for line in worker.log.read()
                if line.get("exception") and "Failed activation" in line["event"]
            ]
            assert any(marker in failure for failure in failures), worker.log.path.read_text()
            assert any("os.getcwd" in failure for failure in failures), failures
            return failures

        await assert_eventually(both_failures_logged, timeout=60)
    finally:
        for handle in handles:
            await handle.terminate("test over")
        worker.stop()

    assert worker.log.not_json() == []
    text = worker.log.path.read_text()
    assert "--- Logging error ---" not in text
    assert "RestrictedWorkflowAccessError" in text  # the sandbox's error, as a logged failure


def test_a_logged_exception_carries_its_stack_but_no_local_variables(
    log_lines: ListHandler,
) -> None:
    def fail_with_a_secret_in_scope() -> None:
        api_key = "s3cret-in-a-local-variable"
        raise ValueError(f"failed with a key of {len(api_key)} characters")

    try:
        fail_with_a_secret_in_scope()
    except ValueError:
        structlog.stdlib.get_logger("test").exception("request_failed")

    [line] = log_lines.events("request_failed")
    [exception] = line["exception"]
    assert exception["exc_value"] == "failed with a key of 26 characters"
    assert [frame["name"] for frame in exception["frames"]][-1] == "fail_with_a_secret_in_scope"
    assert "s3cret-in-a-local-variable" not in json.dumps(line)


async def test_a_replayed_start_is_logged_as_a_replay_and_counted_once(
    idle_api: httpx.AsyncClient, log_lines: ListHandler
) -> None:
    key = f"order-{uuid.uuid4()}"
    first = await post_run(idle_api, headers={"Idempotency-Key": key})
    again = await post_run(idle_api, headers={"Idempotency-Key": key})

    assert first.status_code == again.status_code == 202
    run_id = first.json()["run_id"]
    assert again.json()["run_id"] == run_id
    [accepted] = log_lines.events("run_accepted")
    [replayed] = log_lines.events("run_replayed")
    for line in (accepted, replayed):
        assert line["run_id"] == run_id
        assert line["idempotency_key"] == key
    metrics = (await idle_api.get("/metrics")).text
    assert "agent_runner_runs_accepted_total 1.0" in metrics


def test_a_line_that_cannot_be_rendered_is_still_json_with_its_message(
    log_lines: ListHandler,
) -> None:
    # A library's own mistake: format arguments that do not fit its message. (Formatted here
    # directly: pytest's own log capture would raise on the record first.)
    record = logging.LogRecord(
        "some.library", logging.WARNING, __file__, 1, "%d items in %s", ("not a number",), None
    )
    assert log_lines.formatter is not None

    line = json.loads(log_lines.formatter.format(record))

    assert line["logger"] == "some.library"
    assert line["level"] == "warning"
    assert "%d items in %s" in line["event"]
    assert line["log_error"].startswith("TypeError")
    assert line["timestamp"].endswith("Z")


def test_a_line_of_the_sdks_core_carries_its_fields_as_data(log_lines: ListHandler) -> None:
    """Found by the new-user trial: the core's entry object was written as its repr."""

    class CoreEntry:  # what temporalio.runtime.LoggingConfig attaches: target and fields
        def __init__(self) -> None:
            self.target = "temporal_sdk_core::worker::activities"
            self.fields = {"task_token": "abc", "details": "Activity not found on completion"}

    record = logging.LogRecord(
        "temporalio-sdk_core", logging.WARNING, "(sdk-core)", 0, "Activity not found", (), None
    )
    entry = CoreEntry()
    record.temporal_log = entry
    assert log_lines.formatter is not None

    line = json.loads(log_lines.formatter.format(record))

    assert line["temporal_log"] == {"target": entry.target, "fields": entry.fields}


def test_a_python_warning_is_a_json_line_too(tmp_path: Path) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import warnings\n"
            "from agent_runner.logs import configure_logging\n"
            "configure_logging()\n"
            "warnings.warn('deliberate warning', UserWarning, stacklevel=1)\n",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    assert completed.stderr == ""
    [line] = [json.loads(text) for text in completed.stdout.splitlines()]
    assert line["logger"] == "py.warnings"
    assert "deliberate warning" in line["event"]


async def test_an_activity_line_is_logged_by_its_event_name(
    temporal_address: str, temporal_client: Client, shared_worker: LoggedProcess
) -> None:
    """Found trying the product as a new user: the activity logger glued its context to our
    event names (``"squatter_terminated ({'activity_id': '15', ...})"``), so a search for the
    event found nothing."""
    settings = make_settings(temporal_address)
    slot_id = f"{settings.workflow_id}:slot-0"
    # Another system's workflow on the slot's id, on a task queue of its own: the coordinator
    # removes it, and logs so.
    await temporal_client.start_workflow(
        "NotOurs", id=slot_id, task_queue=f"elsewhere-{uuid.uuid4()}"
    )
    async for api in app_client(settings):
        body = {"agent_type": "policy-checker", "user_id": USER_ID, "on_busy": "enqueue"}
        response = await api.post("/agents/run", json=body)
        assert response.status_code == 202, response.text
        await wait_for_state(api, response.json()["run_id"], "DONE", timeout=60)

    def removed() -> list[str]:
        lines = shared_worker.log.read()
        return [
            line["event"]
            for line in lines
            if "squatter" in str(line.get("event")) and line.get("workflow_id") == slot_id
        ]

    assert removed() == ["squatter_terminated"]
