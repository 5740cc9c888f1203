"""``make openapi``: write the app's OpenAPI document to docs/openapi.json."""

from __future__ import annotations

import json
from pathlib import Path

from activities.builtin_agents import builtin_agents
from agent_runner.agent_registry import AgentRegistry
from agent_runner.settings import Settings
from api.main import create_app

if __name__ == "__main__":
    # The agents agent-runner ships, whatever else is installed here.
    agents = AgentRegistry.of(builtin_agents())
    document = create_app(Settings(_env_file=None), agents).openapi()
    path = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {path}")
