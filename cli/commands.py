"""The ``agent-runner`` commands: start, follow, list and cancel agent runs through the REST
API. ``cli.main`` is the console script that runs them."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from typing import Annotated, Any
from uuid import UUID

import httpx
import typer

from cli import render
from cli.client import DEFAULT_URL, ApiClient, Connection, api_key_to_send
from cli.errors import EXIT_CODES_HELP, CliError, ExitCode
from cli.models import RunStatus
from cli.options import (
    AgentTypeArgument,
    ApiKeyOption,
    EnqueueOption,
    FairnessKeyOption,
    IdempotencyKeyOption,
    JsonOption,
    OnBusyOption,
    ParamOption,
    ParamsJsonOption,
    PriorityOption,
    QueueTimeoutOption,
    RunIdArgument,
    ScopeArgument,
    ScopeOption,
    State,
    UrlOption,
    UserOption,
    WaitOption,
    parse_params,
    parse_weights,
    request_json,
)
from cli.watch import follow

app = typer.Typer(
    help="Run agents and follow their runs through the agent-runner REST API.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@contextmanager
def api_for(url: str, api_key: str | None) -> Iterator[ApiClient]:
    """An API client for the command; a failure ends the command with its message and code,
    never a traceback. From here on, Ctrl-C is the command's to handle: a KeyboardInterrupt, which
    says what it stopped (following a run, say)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with ApiClient(Connection(url, api_key_to_send(api_key))) as api:
            yield api
    except CliError as failure:
        if failure.code == ExitCode.INTERRUPTED:
            render.note(failure.message)
        else:
            render.print_error(failure.message)
        raise typer.Exit(failure.code) from None
    except KeyboardInterrupt:
        render.note("interrupted")
        raise typer.Exit(ExitCode.INTERRUPTED) from None
    except (httpx.InvalidURL, UnicodeEncodeError) as err:
        # A URL that does not parse; an Idempotency-Key that is not ASCII.
        render.print_error(f"cannot send that: {err}")
        raise typer.Exit(ExitCode.USAGE) from None


def version_callback(value: bool) -> None:
    if value:
        render.out.print(f"agent-runner {version('agent-runner')}")
        raise typer.Exit()


@app.callback()
def root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Run agents and follow their runs through the agent-runner REST API."""


@app.command(epilog=EXIT_CODES_HELP)
def run(
    agent_type: AgentTypeArgument,
    user: UserOption,
    param: ParamOption = None,
    params_json: ParamsJsonOption = None,
    enqueue: EnqueueOption = False,
    on_busy: OnBusyOption = None,
    priority: PriorityOption = 3,
    fairness_key: FairnessKeyOption = None,
    queue_timeout: QueueTimeoutOption = None,
    wait: WaitOption = False,
    idempotency_key: IdempotencyKeyOption = None,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Start a run of an agent; print its run id, or with --wait follow it to its end."""
    params = parse_params(param or [], params_json)
    mode = on_busy.value if on_busy else "enqueue" if enqueue else "reject"
    body: dict[str, Any] = {"agent_type": agent_type, "user_id": str(user), "on_busy": mode}
    if params is not None:
        body["params"] = params
    if priority != 3:
        body["priority"] = priority
    if fairness_key is not None:
        body["fairness_key"] = fairness_key
    if queue_timeout is not None:
        body["queue_timeout_seconds"] = queue_timeout
    content = request_json(body)
    # Always a key: after a 503 or a lost answer the run may have started, and a retry with
    # the same key finds it instead of starting a second one.
    key = idempotency_key or f"cli-{uuid.uuid4()}"
    with api_for(url, api_key) as api:
        try:
            response = api.start_run(content, idempotency_key=key)
        except CliError as failed:
            if failed.code != ExitCode.UNAVAILABLE:
                raise
            retry = (
                "if the request reached the API, the run may have started: retry with "
                f"--idempotency-key {key}"
            )
            raise CliError(f"{failed.message}\n{retry}", failed.code) from None
        if response.status_code == 409:
            raise api.busy(response, enqueue=mode != "reject")
        accepted = api.json(response, "run_id")
        run_id = str(accepted["run_id"])
        if wait:
            raise typer.Exit(follow(api, run_id, as_json=as_json, started=True))
        if as_json:
            render.print_json(accepted)
            return
        render.out.print(run_id, markup=False)
        if accepted.get("attached"):
            render.note("attached: the same request was already open; nothing new started")
        if accepted.get("replaced_run_id"):
            render.note(f"replacing {accepted['replaced_run_id']}: its agent is being stopped")
        position = accepted.get("queue_position")
        if position is not None:
            render.note(f"queued at position {position}")
        render.note(f"follow it with: agent-runner status {run_id} --wait")


@app.command(epilog=EXIT_CODES_HELP)
def status(
    run_id: RunIdArgument,
    wait: WaitOption = False,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Show a run's status, or with --wait follow it to its end."""
    with api_for(url, api_key) as api:
        if wait:
            raise typer.Exit(follow(api, run_id, as_json=as_json))
        body = api.status(run_id)
        if as_json:
            render.print_json(body)
        else:
            render.print_status(RunStatus.of(body))


@app.command(epilog=EXIT_CODES_HELP)
def runs(
    agent_type: Annotated[
        str | None, typer.Option("--agent-type", help="Only runs of this agent type.")
    ] = None,
    user: Annotated[UUID | None, typer.Option("--user", help="Only runs for this user.")] = None,
    state: Annotated[
        State | None, typer.Option("--state", help="Only runs in this state.", case_sensitive=False)
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=100, help="Runs per page (the API's limit).")
    ] = 20,
    all_pages: Annotated[
        bool, typer.Option("--all", help="Follow next_page_token through every page.")
    ] = False,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """List runs, newest first (the queued ones first)."""
    query: dict[str, str | int] = {"limit": limit}
    if agent_type:
        query["agent_type"] = agent_type
    if user:
        query["user_id"] = str(user)
    if state:
        query["state"] = state.value
    listed: list[dict[str, Any]] = []
    with api_for(url, api_key) as api:
        page = api.runs(query)
        listed.extend(page["runs"])
        seen: set[str] = set()
        while all_pages and (token := page.get("next_page_token")) and token not in seen:
            seen.add(token)
            page = api.runs({**query, "page_token": token})
            listed.extend(page["runs"])
    if as_json:
        render.print_json({"runs": listed, "next_page_token": page.get("next_page_token")})
    else:
        render.print_runs(listed)
        if page.get("next_page_token"):
            render.note("more runs: add --all (or raise --limit)")


@app.command(epilog=EXIT_CODES_HELP)
def cancel(
    run_id: RunIdArgument,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Cancel an open run: its agent stops at its next heartbeat and the run ends ERROR."""
    with api_for(url, api_key) as api:
        code, body = api.cancel(run_id)
    if as_json:
        render.print_json(body)
    elif code == 200:
        render.out.print(f"run {run_id} cancelled: it ended {body.get('state')}", markup=False)
    else:
        render.out.print(
            f"cancel requested; run {run_id} is {body.get('state')} while its agent stops",
            markup=False,
        )
        render.note(f"see it end with: agent-runner status {run_id} --wait")


@app.command(epilog=EXIT_CODES_HELP)
def types(
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """List the agent types the API runs: parameters, and workers polling for each."""
    with api_for(url, api_key) as api:
        body = api.types()
    if as_json:
        render.print_json(body)
    else:
        render.print_types(body["agents"])


limits_app = typer.Typer(
    help="Show or change the deployment's bound: N (slots per scope) and the queue's size.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=False,
    invoke_without_command=True,
)
app.add_typer(limits_app, name="limits")


@limits_app.callback()
def limits(
    context: typer.Context,
    scope: ScopeOption = None,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Show the limits every replica follows, or one scope's (or change them: ``limits set``)."""
    if context.invoked_subcommand is not None:
        return
    with api_for(url, api_key) as api:
        body = api.scope_limits(scope) if scope is not None else api.limits()
    if as_json:
        render.print_json(body)
    else:
        render.print_limits(body)


@limits_app.command("set", epilog=EXIT_CODES_HELP)
def set_limits(
    slots: Annotated[
        int | None,
        typer.Option("--slots", min=1, help="N: agents of one scope that may work at once."),
    ] = None,
    queue_max: Annotated[
        int | None,
        typer.Option("--queue-max", min=1, help="Runs that may wait in one scope's queue."),
    ] = None,
    aging_seconds: Annotated[
        float | None,
        typer.Option("--aging-seconds", min=0, help="A run waiting this long is priority 1."),
    ] = None,
    fair_shares: Annotated[
        bool | None,
        typer.Option(
            "--fair-shares/--no-fair-shares",
            help="Grant one priority's runs by weighted round-robin over fairness keys.",
            show_default=False,
        ),
    ] = None,
    weight: Annotated[
        list[str] | None,
        typer.Option(
            "--weight",
            help="KEY=N, repeatable: the whole map of weights (keys left out get 1).",
            metavar="KEY=N",
        ),
    ] = None,
    paused: Annotated[
        bool | None,
        typer.Option(
            "--paused/--resumed",
            help="Pause (or resume) the whole deployment: every scope queues and starts nothing.",
            show_default=False,
        ),
    ] = None,
    scope: ScopeOption = None,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Change N, the queue's size or its order for every scope (or, with --scope, one scope's
    own N, queue size and weights), on every replica within a second. Lowering N lets the
    agents at work finish; nothing new starts until fewer than N work."""
    given = (
        ("slots", slots),
        ("queue_max", queue_max),
        ("aging_seconds", aging_seconds),
        ("fair_shares", fair_shares),
        ("weights", parse_weights(weight) if weight is not None else None),
        ("paused", paused),
    )
    change = {name: value for name, value in given if value is not None}
    if not change:
        render.print_error(
            "give one or more of --slots, --queue-max, --aging-seconds, --fair-shares, --weight, "
            "--paused"
        )
        raise typer.Exit(ExitCode.USAGE)
    if scope is not None and {"aging_seconds", "fair_shares", "paused"} & set(change):
        render.print_error(
            "--aging-seconds, --fair-shares and --paused are the deployment's, not a scope's "
            "(a scope: agent-runner pause|resume SCOPE)"
        )
        raise typer.Exit(ExitCode.USAGE)
    with api_for(url, api_key) as api:
        body = api.set_scope_limits(scope, change) if scope else api.set_limits(change)
    if as_json:
        render.print_json(body)
    else:
        render.print_limits(body)


@app.command(epilog=EXIT_CODES_HELP)
def pause(
    scope: ScopeArgument,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Pause a scope: it keeps accepting and queueing runs and starts none; agents at work
    finish. On every replica within a second."""
    _pause(scope, paused=True, as_json=as_json, url=url, api_key=api_key)


@app.command(epilog=EXIT_CODES_HELP)
def resume(
    scope: ScopeArgument,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Resume a paused scope: its waiting runs start at once, in order."""
    _pause(scope, paused=False, as_json=as_json, url=url, api_key=api_key)


def _pause(scope: str, *, paused: bool, as_json: bool, url: str, api_key: str | None) -> None:
    with api_for(url, api_key) as api:
        body = api.pause(scope, paused=paused)
    if as_json:
        render.print_json(body)
    else:
        render.print_limits(body)
