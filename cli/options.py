"""The options several commands share, and ``--param``/``--params-json`` parsing."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

import typer

from cli.client import API_KEY_ENV, URL_ENV


class State(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"
    ERROR = "ERROR"


UrlOption = Annotated[
    str, typer.Option("--url", envvar=URL_ENV, help="The API's base URL.", metavar="URL")
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar=API_KEY_ENV,
        help="The API key, sent as a bearer token (prefer the environment variable: "
        "options show in the process list).",
        show_default=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the API's JSON instead of text for people.")
]
WaitOption = Annotated[
    bool,
    typer.Option(
        "--wait",
        help="Follow the run live until it ends; exit 0 on DONE (printing the result), 1 on ERROR.",
    ),
]
AgentTypeArgument = Annotated[str, typer.Argument(help="Which agent to run (see `types`).")]
UserOption = Annotated[UUID, typer.Option("--user", help="The user the agent works for (UUID).")]
ParamOption = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        "-p",
        help="A parameter, key=value (the value read as JSON when it is JSON); repeatable.",
        metavar="KEY=VALUE",
    ),
]
ParamsJsonOption = Annotated[
    str | None,
    typer.Option("--params-json", help="All parameters as one JSON object.", metavar="JSON"),
]
EnqueueOption = Annotated[
    bool,
    typer.Option("--enqueue", help="When every slot is taken, wait in the queue (not 409)."),
]


class OnBusyChoice(StrEnum):
    REJECT = "reject"
    ENQUEUE = "enqueue"
    ATTACH = "attach"
    REPLACE = "replace"


OnBusyOption = Annotated[
    OnBusyChoice | None,
    typer.Option(
        "--on-busy",
        help=(
            "When every slot is taken: reject (exit 4), enqueue, attach (print the open run "
            "of the same agent, user and params, else enqueue), or replace (cancel the oldest "
            "working run and take its slot first). --enqueue is --on-busy enqueue."
        ),
    ),
]
ScopeOption = Annotated[
    str | None,
    typer.Option(
        "--scope",
        help="One scope: global, a user id or an agent type (as the deployment's AGENT_SCOPE).",
        metavar="SCOPE",
    ),
]
ScopeArgument = Annotated[
    str,
    typer.Argument(
        help="The scope: global, a user id or an agent type (as the deployment's AGENT_SCOPE).",
        metavar="SCOPE",
    ),
]
PriorityOption = Annotated[
    int,
    typer.Option("--priority", min=1, max=5, help="While it waits: 1 is served first, 5 last."),
]
FairnessKeyOption = Annotated[
    str | None,
    typer.Option(
        "--fairness-key",
        help="With fair shares on: whose share it is served from (default: its user).",
        metavar="KEY",
    ),
]
QueueTimeoutOption = Annotated[
    float | None,
    typer.Option(
        "--queue-timeout",
        min=0.001,
        help="Seconds it may wait in the queue; then it ends ERROR 'expired in queue'.",
        metavar="SECONDS",
    ),
]
IdempotencyKeyOption = Annotated[
    str | None,
    typer.Option(
        "--idempotency-key",
        help="Retry safely: the same key and request give the same run, not a second one.",
        metavar="KEY",
    ),
]
RunIdArgument = Annotated[
    str, typer.Argument(help="The run's id, as `run` printed it.", show_default=False)
]


def parse_params(pairs: list[str], params_json: str | None) -> dict[str, Any] | None:
    """``--params-json`` first, then each ``--param key=value`` over it. A value is read as
    JSON when it is JSON (``pages=3``, ``strict=true``, ``tags=["a"]``), else as text. None
    when neither is given (the request then has no ``params``). What JSON cannot carry (a
    number out of range, such as 1e400, which reads as infinity; nesting deeper than the
    parser goes) is a usage error."""
    params: dict[str, Any] = {}
    if params_json is not None:
        try:
            loaded = json.loads(params_json, parse_constant=_not_json)
        except RecursionError:
            raise typer.BadParameter(TOO_DEEP, param_hint="--params-json") from None
        except ValueError as bad:
            raise typer.BadParameter(f"not JSON: {bad}", param_hint="--params-json") from None
        if not isinstance(loaded, dict):
            raise typer.BadParameter("must be a JSON object", param_hint="--params-json")
        _check_sendable(loaded, "", "--params-json")
        params.update(loaded)
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not key=value", param_hint="--param")
        try:
            value = json.loads(text, parse_constant=_not_json)
        except RecursionError:
            raise typer.BadParameter(f"{key}: {TOO_DEEP}", param_hint="--param") from None
        except ValueError:
            value = text  # not JSON (NaN and Infinity neither): the text itself
        _check_sendable(value, f"{key}: ", "--param")
        params[key] = value
    return params if params or params_json is not None else None


TOO_DEEP = "nested too deeply"


def request_json(body: dict[str, Any]) -> bytes:
    """The request's body, written once here: it is what parse_params checked, and a body its
    checks let through but that JSON cannot carry after all (nesting at the very limit) is a
    usage error here too, never a failure while sending."""
    try:
        return json.dumps(body, allow_nan=False).encode()
    except ValueError:
        raise typer.BadParameter("a number is out of range", param_hint="params") from None
    except RecursionError:
        raise typer.BadParameter(TOO_DEEP, param_hint="params") from None


def _check_sendable(value: Any, prefix: str, option: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        raise typer.BadParameter(f"{prefix}a number is out of range", param_hint=option) from None
    except RecursionError:
        raise typer.BadParameter(f"{prefix}{TOO_DEEP}", param_hint=option) from None


def _not_json(constant: str) -> object:
    raise ValueError(f"{constant} is not JSON")


def parse_weights(pairs: list[str]) -> dict[str, int]:
    """``--weight key=3`` pairs as the map of weights (the API checks the bounds)."""
    weights: dict[str, int] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key or not text.strip().isdigit():
            raise typer.BadParameter(
                f"{pair!r} is not KEY=N (N a whole number)", param_hint="--weight"
            )
        weights[key] = int(text)
    return weights
