"""Agents as plug-ins: discovery, parameters, and runs that wait for a worker that has their
agent. Against the session's real Temporal server, with real workers in the test process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, ConfigDict, Field
from temporalio.client import Client

from activities.builtin_agents import builtin_agents
from agent_runner.agent_registry import AgentRegistry, AgentRegistryError
from agent_runner.agents import ENTRY_POINT_GROUP, Agent, AgentContext, AgentDefaults
from agent_runner.settings import Settings
from devtools.processes import ROOT, settings_env
from tests.helpers import (
    USER_ID,
    app_client,
    assert_eventually,
    in_process_worker,
    make_settings,
    wait_for_state,
)


class InvoiceParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    invoice_number: str = Field(pattern=r"^INV-\d+$")
    pages: int = Field(default=1, ge=1, le=50)


class InvoiceReader(Agent[InvoiceParams]):
    """An agent of another team: it has parameters and defaults of its own."""

    name = "invoice-reader"
    params_model = InvoiceParams
    defaults = AgentDefaults(timeout_seconds=120.0)
    description = "Reads an invoice."

    async def run(self, ctx: AgentContext, params: InvoiceParams) -> dict[str, Any]:
        for page in range(params.pages):
            ctx.checkpoint()
            await ctx.report_progress(page / params.pages, f"page {page + 1}")
        ctx.log.info("invoice_read", invoice_number=params.invoice_number)
        return {"invoice_number": params.invoice_number, "pages": params.pages}


def point(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


def test_agents_are_found_through_entry_points() -> None:
    registry = AgentRegistry.installed(
        [point("invoice-reader", "tests.test_plugins:InvoiceReader")]
    )
    assert list(registry) == ["invoice-reader"]
    assert isinstance(registry["invoice-reader"], InvoiceReader)
    # The project declares its own two the same way.
    assert {"policy-checker", "document-extractor"} <= set(AgentRegistry.installed())


@pytest.mark.parametrize(
    ("points", "message"),
    [
        (
            [
                point("invoice-reader", "tests.test_plugins:InvoiceReader"),
                point("invoice-reader-copy", "tests.test_plugins:InvoiceReader"),
            ],
            "two agents are named 'invoice-reader'",
        ),
        ([point("broken", "tests.no_such_module:Agent")], "cannot load agent broken"),
        ([point("not-an-agent", "tests.test_plugins:InvoiceParams")], "is not an agent_runner"),
    ],
)
def test_a_bad_plugin_is_a_clear_start_up_error(points: list[EntryPoint], message: str) -> None:
    with pytest.raises(AgentRegistryError, match=message) as caught:
        AgentRegistry.installed(points)
    if "two agents" in message:
        # Both entry points are named, so the operator knows which packages clash.
        assert "tests.test_plugins:InvoiceReader" in str(caught.value)


def test_an_agent_gets_its_own_defaults_unless_the_environment_says_otherwise() -> None:
    unset = Settings(_env_file=None)  # type: ignore[call-arg]
    assert unset.run_policy(InvoiceReader.defaults).timeout_seconds == 120.0
    assert unset.run_policy(InvoiceReader.defaults).max_attempts == unset.agent_max_attempts
    given = Settings(_env_file=None, agent_timeout_seconds=30.0)  # type: ignore[call-arg]
    assert given.run_policy(InvoiceReader.defaults).timeout_seconds == 30.0


def test_env_example_copied_to_env_keeps_each_agents_own_defaults() -> None:
    """The README says: copy .env.example to .env. Failed before: it set the policy settings,
    and a setting read from .env counts as given, for every agent."""
    copied = Settings(_env_file=ROOT / ".env.example")  # type: ignore[call-arg]
    unset = Settings(_env_file=None)  # type: ignore[call-arg]
    for defaults in (InvoiceReader.defaults, AgentDefaults()):
        assert copied.run_policy(defaults) == unset.run_policy(defaults)


@pytest.fixture
def plugin_settings(temporal_address: str) -> Settings:
    return make_settings(temporal_address, task_queue=f"plugins-{uuid.uuid4()}")


async def test_bad_params_are_422_naming_each_field(plugin_settings: Settings) -> None:
    agents = [*builtin_agents(0.1), InvoiceReader()]
    async for api in app_client(plugin_settings, agents):
        response = await api.post(
            "/agents/run",
            json={
                "agent_type": "invoice-reader",
                "user_id": USER_ID,
                "params": {"invoice_number": "42", "pages": 0, "colour": "red"},
            },
        )
        missing = await api.post(
            "/agents/run", json={"agent_type": "invoice-reader", "user_id": USER_ID}
        )
        extra_for_none = await api.post(
            "/agents/run",
            json={"agent_type": "policy-checker", "user_id": USER_ID, "params": {"x": 1}},
        )

    assert response.status_code == 422
    places = {tuple(problem["loc"]) for problem in response.json()["detail"]}
    assert places == {
        ("body", "params", "invoice_number"),
        ("body", "params", "pages"),
        ("body", "params", "colour"),
    }
    assert missing.status_code == 422
    assert [p["loc"] for p in missing.json()["detail"]] == [["body", "params", "invoice_number"]]
    assert extra_for_none.status_code == 422
    assert [p["loc"] for p in extra_for_none.json()["detail"]] == [["body", "params", "x"]]


async def test_a_run_waits_pending_for_a_worker_that_has_its_agent_then_runs(
    temporal_client: Client, plugin_settings: Settings
) -> None:
    agents = [*builtin_agents(0.1), InvoiceReader()]
    async for api in app_client(plugin_settings, agents):
        # Workers serve only the agents they have: these have the built-in two.
        async with in_process_worker(temporal_client, plugin_settings):
            response = await api.post(
                "/agents/run",
                json={
                    "agent_type": "invoice-reader",
                    "user_id": USER_ID,
                    "params": {"invoice_number": "INV-7", "pages": 3},
                },
            )
            assert response.status_code == 202, response.text
            run_id = response.json()["run_id"]

            async def waiting_for_a_worker(
                api: httpx.AsyncClient = api, run_id: str = run_id
            ) -> None:
                body = (await api.get(f"/agents/status/{run_id}")).json()
                assert (body["state"], body["waiting_for"]) == ("PENDING", "worker"), body

            await assert_eventually(waiting_for_a_worker, timeout=30)
            types = {t["name"]: t for t in (await api.get("/agents/types")).json()["agents"]}
            assert types["invoice-reader"]["workers_polling"] == 0
            # Its own default (the tests' settings leave the timeout unset).
            assert types["invoice-reader"]["defaults"]["timeout_seconds"] == 120.0
            assert types["invoice-reader"]["params_schema"]["required"] == ["invoice_number"]
            await asyncio.sleep(1.0)  # a worker without the agent never takes it
            await waiting_for_a_worker()

            # A worker that has it appears (another team's machine, say): the run starts.
            elsewhere = await Client.connect(plugin_settings.temporal_address)
            async with in_process_worker(elsewhere, plugin_settings, [InvoiceReader()]):
                body = await wait_for_state(api, run_id, "DONE", "ERROR")

    assert body["state"] == "DONE"
    assert body["result"] == {"invoice_number": "INV-7", "pages": 3}
    assert body["attempt"] == 1


@pytest.mark.parametrize("process", ["worker", "api"])
def test_a_process_with_two_agents_of_one_name_does_not_start(
    process: str, plugin_settings: Settings, tmp_path: Path
) -> None:
    """Another package installed beside ours declares an agent named like a built-in one."""
    dist = tmp_path / "site" / "acme_agents-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-agents\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\npolicy-checker = acme_agents:Checker\n"
    )
    (tmp_path / "site" / "acme_agents.py").write_text(
        "from agent_runner.agents import Agent\n\n\n"
        "class Checker(Agent):\n"
        "    name = 'policy-checker'\n\n"
        "    async def run(self, ctx, params):\n"
        "        return 'approved'\n"
    )
    command = (
        [sys.executable, "worker.py"] if process == "worker" else [sys.executable, "-m", "api"]
    )
    env = {**os.environ, **settings_env(plugin_settings)}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "site"), str(ROOT)])
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )

    assert done.returncode == 1
    [line] = [json.loads(text) for text in done.stdout.splitlines() if "agent_registry" in text]
    assert line["event"] == "agent_registry_invalid"
    assert "two agents are named 'policy-checker'" in line["message"]
    assert "acme-agents 1.0" in line["message"]
    assert "Traceback" not in done.stdout + done.stderr


def test_a_worker_can_serve_only_some_agents() -> None:
    installed = AgentRegistry.installed()
    assert list(installed.only("policy-checker")) == ["policy-checker"]
    assert list(installed.only("")) == list(installed)
    with pytest.raises(AgentRegistryError, match="not installed: claims-bot"):
        installed.only("policy-checker, claims-bot")
