"""The docs that describe the code must follow it: every setting is in .env.example and the
settings table of docs/operations.md, and docs/openapi.json is the app's OpenAPI document
(`make openapi` rewrites it)."""

from __future__ import annotations

import json
import re

from activities.builtin_agents import builtin_agents
from agent_runner.agent_registry import AgentRegistry
from agent_runner.settings import Settings
from api.main import create_app
from tests.helpers import ROOT


def test_every_setting_is_documented() -> None:
    env_example = (ROOT / ".env.example").read_text()
    operations = (ROOT / "docs" / "operations.md").read_text()
    for name in Settings.model_fields:
        variable = name.upper()
        assert variable in env_example, f"{variable} is missing from .env.example"
        assert f"`{variable}`" in operations, f"{variable} is missing from docs/operations.md"


def test_committed_openapi_document_matches_the_app() -> None:
    committed = json.loads((ROOT / "docs" / "openapi.json").read_text())
    current = create_app(Settings(_env_file=None), AgentRegistry.of(builtin_agents())).openapi()  # type: ignore[call-arg]
    assert committed == json.loads(json.dumps(current)), "run `make openapi`"


def test_the_readmes_file_table_matches_the_tree() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| Path | What it holds |") :].split("\n\n", 1)[0]
    named: list[str] = []
    for row in table.splitlines()[2:]:
        first, second = row.split("|")[1:3]
        directory = ""
        for path in re.findall(r"`([^`]+)`", first):
            if path.endswith("/"):
                directory = path
            elif "/" in path:
                directory = path.rsplit("/", 1)[0] + "/"
            else:
                path = directory + path  # a file beside the one before it
            named.append(path.rstrip("/"))
        # Files the second column names beside the first column's (e.g. `status.py` in runs/).
        named += [directory + name for name in re.findall(r"`([\w/]+\.py)`", second)]
    for path in named:
        assert (ROOT / path).exists(), f"README names {path}, which does not exist"
    top = {path.split("/")[0] for path in named}
    for entry in ROOT.iterdir():
        is_code = (entry.is_dir() and any(entry.glob("*.py"))) or entry.suffix == ".py"
        if is_code and not entry.name.startswith("."):
            assert entry.name in top, f"{entry.name} is missing from the README's file table"
