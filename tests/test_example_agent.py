"""The example plug-in (examples/pdf-agent) end to end: a real worker process and a real API
process find ``claim-form-extractor`` through its entry point, as they would once the package
is installed, and a run started through the API reads the sample claim form.

Nothing is installed into the environment: the test writes the metadata an install would leave
(a dist-info with the package's entry points, read from its pyproject.toml) into a directory of
its own and puts it, with the package's src/, on the processes' PYTHONPATH."""

from __future__ import annotations

import os
import tomllib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_runner.agents import ENTRY_POINT_GROUP
from agent_runner.settings import Settings
from devtools.processes import free_port, wait_until_serving
from tests.helpers import (
    ROOT,
    USER_ID,
    LoggedProcess,
    assert_eventually,
    make_settings,
    wait_for_state,
)

EXAMPLE = ROOT / "examples" / "pdf-agent"
AGENT = "claim-form-extractor"
SAMPLE_RESULT = {
    "document": "sample-claim.pdf",
    "pages": 2,
    "fields": {
        "policy_number": "HO-2026-004711",
        "claimant": "Maria Keller",
        "date_of_loss": "2026-03-14",
        "amount_claimed": "4850.00",
        "currency": "EUR",
        "description": (
            "A pipe burst under the kitchen sink while we were away for the weekend. "
            "The water ruined the kitchen floor boards and the dishwasher."
        ),
    },
}
# Slow machines: two processes start, connect and poll before the first run can go.
TIMEOUT = 60.0


@dataclass
class PluginStack:
    settings: Settings
    url: str
    worker: LoggedProcess
    api: LoggedProcess


def write_install_metadata(site: Path) -> None:
    """What installing the example leaves for ``importlib.metadata``: its name, version and
    entry points, as its pyproject.toml declares them."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    name, version = project["name"], project["version"]
    dist_info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    )
    points = project["entry-points"][ENTRY_POINT_GROUP]
    (dist_info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\n" + "".join(f"{key} = {value}\n" for key, value in points.items())
    )


@pytest.fixture(scope="module")
def plugin_stack(
    temporal_address: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PluginStack]:
    directory = tmp_path_factory.mktemp("pdf-agent")
    write_install_metadata(directory / "site")
    settings = make_settings(
        temporal_address, task_queue=f"pdf-{uuid.uuid4()}", api_port=free_port()
    )
    path = [str(directory / "site"), str(EXAMPLE / "src"), os.environ.get("PYTHONPATH", "")]
    with pytest.MonkeyPatch.context() as env:
        # The children get this process's environment (see devtools.processes.settings_env).
        env.setenv("PYTHONPATH", os.pathsep.join(part for part in path if part))
        env.delenv("PDF_AGENT_DOCUMENTS_DIR", raising=False)
        worker = LoggedProcess.worker(settings, directory / "worker.log")
        api = LoggedProcess.api(settings, directory / "api.log")
    stack = PluginStack(settings, f"http://127.0.0.1:{settings.api_port}", worker, api)
    try:
        wait_until_serving(
            f"{stack.url}/healthz", timeout=TIMEOUT, processes=[api.process, worker.process]
        )
        yield stack
    finally:
        api.stop()
        worker.stop()


@pytest.fixture
async def api(plugin_stack: PluginStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=plugin_stack.url, timeout=15.0) as client:
        yield client


async def post_claim_run(api: httpx.AsyncClient, params: dict[str, Any]) -> httpx.Response:
    return await api.post(
        "/agents/run", json={"agent_type": AGENT, "user_id": USER_ID, "params": params}
    )


async def test_the_api_and_the_worker_find_the_agent_through_its_entry_point(
    api: httpx.AsyncClient,
) -> None:
    async def listed_with_a_worker() -> dict[str, Any]:
        response = await api.get("/agents/types")
        assert response.status_code == 200, response.text
        agents: list[dict[str, Any]] = response.json()["agents"]
        [agent] = [agent for agent in agents if agent["name"] == AGENT]
        assert agent["workers_polling"], agent
        return agent

    agent = await assert_eventually(listed_with_a_worker, timeout=TIMEOUT)

    assert agent["description"].startswith("Reads a claim form")
    assert agent["params_schema"]["required"] == ["document"]
    assert agent["params_schema"]["additionalProperties"] is False


async def test_a_run_extracts_the_fields_of_the_sample_claim(
    api: httpx.AsyncClient, plugin_stack: PluginStack
) -> None:
    response = await post_claim_run(api, {"document": "sample-claim.pdf"})
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]

    body = await wait_for_state(api, run_id, "DONE", "ERROR", timeout=TIMEOUT)

    assert body["state"] == "DONE", body
    assert body["result"] == SAMPLE_RESULT
    assert body["attempt"] == 1

    async def logged() -> dict[str, Any]:
        [line] = [
            line
            for line in plugin_stack.worker.log.events("claim_form_extracted")
            if line.get("run_id") == run_id
        ]
        return line

    # The agent's own log line carries its run's keys.
    line = await assert_eventually(logged)
    assert line["agent_type"] == AGENT
    assert line["user_id"] == USER_ID
    assert line["policy_number"] == "HO-2026-004711"
    assert "Maria Keller" not in str(line), "the claimant's name is not logged"


async def test_a_missing_document_ends_the_run_in_error_naming_it(
    api: httpx.AsyncClient, plugin_stack: PluginStack
) -> None:
    response = await post_claim_run(api, {"document": "no-such-claim.pdf"})
    assert response.status_code == 202, response.text

    body = await wait_for_state(api, response.json()["run_id"], "ERROR", "DONE", timeout=TIMEOUT)

    assert body["state"] == "ERROR"
    assert body["error"] == (
        "DocumentNotFoundError: no document named 'no-such-claim.pdf' in the documents directory"
    )
    # A PermanentError: no attempt after the first.
    assert body["attempt"] == 1


@pytest.mark.parametrize(
    ("params", "field", "error_type"),
    [
        ({"document": "../etc/passwd"}, "document", "value_error"),
        ({"document": "/etc/passwd"}, "document", "value_error"),
        ({"document": "sample-claim.pdf", "pages": 3}, "pages", "extra_forbidden"),
        ({}, "document", "missing"),
    ],
)
async def test_bad_params_are_refused_with_422_naming_the_field(
    api: httpx.AsyncClient, params: dict[str, Any], field: str, error_type: str
) -> None:
    response = await post_claim_run(api, params)

    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert problem["loc"] == ["body", "params", field]
    assert problem["type"] == error_type
