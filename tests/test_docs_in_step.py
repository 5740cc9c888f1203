"""The docs that describe the code must follow it: every setting is in .env.example and the
README's table, and docs/openapi.json is the app's OpenAPI document (`make openapi` rewrites
it)."""

from __future__ import annotations

import json

from activities.builtin_agents import builtin_agents
from agent_runner.agent_registry import AgentRegistry
from agent_runner.settings import Settings
from api.main import create_app
from tests.helpers import ROOT


def test_every_setting_is_documented() -> None:
    env_example = (ROOT / ".env.example").read_text()
    readme = (ROOT / "README.md").read_text()
    for name in Settings.model_fields:
        variable = name.upper()
        assert variable in env_example, f"{variable} is missing from .env.example"
        assert f"`{variable}`" in readme, f"{variable} is missing from the README's settings"


def test_committed_openapi_document_matches_the_app() -> None:
    committed = json.loads((ROOT / "docs" / "openapi.json").read_text())
    current = create_app(Settings(_env_file=None), AgentRegistry.of(builtin_agents())).openapi()  # type: ignore[call-arg]
    assert committed == json.loads(json.dumps(current)), "run `make openapi`"
