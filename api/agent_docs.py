"""The OpenAPI document names the installed agents: ``POST /agents/run``'s body is a union of
one request per agent, discriminated by ``agent_type``, each with that agent's ``params``."""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from agent_runner.agent_registry import AgentRegistry

_REF = "#/components/schemas/{model}"


def describe_agents(app: FastAPI, agents: AgentRegistry) -> None:
    """Replace ``app.openapi`` with one that documents each agent's parameters."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                routes=app.routes,
            )
            app.openapi_schema = with_agents(document, agents)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def with_agents(document: dict[str, Any], agents: AgentRegistry) -> dict[str, Any]:
    schemas = document.get("components", {}).get("schemas", {})
    generic = schemas.get("RunRequest")
    if generic is None or not agents:
        return document
    mapping = {}
    for name in agents:
        params_title = _title(name, "Params")
        params = agents[name].params_model.model_json_schema(ref_template=_REF)
        schemas.update(params.pop("$defs", {}))
        params["title"] = params_title
        schemas[params_title] = params
        request = copy.deepcopy(generic)
        request["title"] = _title(name, "RunRequest")
        request["description"] = agents[name].description or f"Run the {name} agent."
        request["properties"]["agent_type"] = {
            "type": "string",
            "const": name,
            "title": "Agent Type",
        }
        params_ref: dict[str, Any] = {"$ref": _REF.format(model=params_title)}
        if _takes_none(agents, name):
            params_ref = {"anyOf": [params_ref, {"type": "null"}]}
        request["properties"]["params"] = params_ref
        request.pop("examples", None)
        schemas[request["title"]] = request
        mapping[name] = _REF.format(model=request["title"])
    schemas["RunRequest"] = {
        "title": "RunRequest",
        "description": "A run of one of the installed agents; `params` depend on `agent_type`.",
        "oneOf": [{"$ref": ref} for ref in mapping.values()],
        "discriminator": {"propertyName": "agent_type", "mapping": mapping},
        "examples": generic.get("examples", []),
    }
    return document


def _takes_none(agents: AgentRegistry, name: str) -> bool:
    """Whether ``params`` may be left out (the model has no required field)."""
    try:
        agents.params(name, None)
    except ValueError:
        return False
    return True


def _title(name: str, suffix: str) -> str:
    return "".join(part.capitalize() for part in name.split("-")) + suffix
