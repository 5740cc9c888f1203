"""What people read: statuses, tables of runs and agent types, errors. Answers go to stdout,
everything else (errors, hints, a followed run's progress) to stderr, so that
``agent-runner run ... --wait > result.json`` keeps only the result."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from cli.models import RunStatus

STATE_STYLES = {"PENDING": "yellow", "RUNNING": "cyan", "DONE": "green", "ERROR": "red"}
WAITING_FOR = {
    "queue": "its turn in the queue",
    "previous_agent": "the previous run's agent to stop",
    "worker": "a worker that has its agent to take it",
}

out = Console(highlight=False, soft_wrap=True)
# Piped tables keep every column whole (a terminal's width cuts the user ids instead).
if not out.is_terminal:
    out.width = 1000
err = Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(body: Any, *, lines: bool = False) -> None:
    """The API's JSON, unchanged: indented for a person at a terminal, else one line."""
    indent = 2 if out.is_terminal and not lines else None
    sys.stdout.write(json.dumps(body, indent=indent, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def print_error(message: str) -> None:
    for line in message.splitlines() or [""]:
        err.print(Text.assemble(("error: ", "bold red"), line))


def note(message: str) -> None:
    """A hint or a progress line, for people (stderr)."""
    err.print(Text(message, style="dim"))


def state_text(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


def print_result(status: RunStatus) -> None:
    """A DONE run's result on stdout: text as it is, anything else as JSON."""
    result = status.result
    if isinstance(result, str):
        out.print(result, markup=False)
    else:
        out.print(json.dumps(result, indent=2, ensure_ascii=False), markup=False)


def when(value: Any) -> str:
    if not isinstance(value, str):
        return "-"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def took(started: Any, finished: Any) -> str:
    try:
        seconds = (
            datetime.fromisoformat(finished) - datetime.fromisoformat(started)
        ).total_seconds()
    except (TypeError, ValueError):
        return ""
    return f"{seconds:.1f} s"


def status_lines(status: RunStatus) -> list[str]:
    """What a person wants to know about the run's state, in a few words each."""
    lines = []
    if status.queue_position is not None:
        lines.append(f"queued at position {status.queue_position}")
    if status.waiting_for:
        lines.append(f"waiting for {WAITING_FOR.get(status.waiting_for, status.waiting_for)}")
    if status.progress is not None and not status.is_final:
        lines.append(f"{status.progress.fraction:.0%} {status.progress.message}".rstrip())
    if status.last_failure is not None:
        lines.append(failure_line(status))
    return lines


def failure_line(status: RunStatus) -> str:
    failure = status.last_failure
    if failure is None:
        return ""
    then = "retrying" if failure.retrying else "no attempts left"
    return f"attempt {failure.attempt} failed: {failure.reason} ({then})"


def print_status(status: RunStatus) -> None:
    raw = status.raw
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    grid.add_row("run", escape(status.run_id))
    grid.add_row("agent", escape(str(raw.get("agent_type"))))
    grid.add_row("user", escape(str(raw.get("user_id"))))
    grid.add_row("state", state_text(status.state))
    grid.add_row("attempt", str(status.attempt))
    for line in status_lines(status):
        grid.add_row("", escape(line))
    if raw.get("queued_at"):
        grid.add_row("queued", when(raw.get("queued_at")))
    grid.add_row("started", when(raw.get("started_at")))
    if raw.get("finished_at"):
        duration = took(raw.get("started_at"), raw.get("finished_at"))
        grid.add_row("finished", f"{when(raw.get('finished_at'))}  ({duration})")
    if status.state == "DONE":
        result = status.result
        shown = result if isinstance(result, str) else json.dumps(result, indent=2)
        grid.add_row("result", escape(shown))
    if status.state == "ERROR":
        grid.add_row("error", Text(status.error, style="red"))
    out.print(grid)


def print_runs(runs: list[dict[str, Any]]) -> None:
    if not runs:
        note("no runs")
        return
    table = runs_table(runs, short_users=False)
    natural = Measurement.get(out, out.options.update(max_width=10_000), table).maximum
    if natural > out.width:
        table = runs_table(runs, short_users=True)
    out.print(table)


def runs_table(runs: list[dict[str, Any]], *, short_users: bool) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    # A run id wraps rather than lose characters: it is what the other commands take.
    table.add_column("RUN ID", overflow="fold")
    for column in ("AGENT", "STATE", "STARTED", "TOOK", "USER"):
        table.add_column(column, no_wrap=True)
    for run in runs:
        user = str(run.get("user_id"))
        table.add_row(
            escape(str(run.get("run_id"))),
            escape(str(run.get("agent_type"))),
            state_text(str(run.get("state"))),
            ago(run.get("started_at")),
            took(run.get("started_at"), run.get("finished_at")),
            escape(f"{user[:8]}…" if short_users and len(user) > 8 else user),
        )
    return table


def ago(value: Any) -> str:
    """``12 s ago``, ``5 min ago``, ``3 h ago``, ``2 d ago``."""
    if not isinstance(value, str):
        return "-"
    try:
        seconds = (datetime.now(UTC) - datetime.fromisoformat(value)).total_seconds()
    except (TypeError, ValueError):
        return value
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{max(0, int(seconds))} s ago"


def params_summary(schema: Any) -> str:
    """``document: string (required), pages: integer`` from a JSON Schema; ``none``."""
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not properties:
        return "none"
    required = set(schema.get("required", []))
    parts = []
    for name, spec in properties.items():
        kind = spec.get("type", "any") if isinstance(spec, dict) else "any"
        parts.append(f"{name}: {kind}{' (required)' if name in required else ''}")
    return ", ".join(parts)


def print_types(agents: list[dict[str, Any]]) -> None:
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("AGENT TYPE", no_wrap=True)
    table.add_column("DESCRIPTION")
    table.add_column("PARAMS")
    table.add_column("WORKERS", justify="right", no_wrap=True)
    for agent in agents:
        polling = agent.get("workers_polling")
        workers = (
            Text("?", style="dim")
            if polling is None
            else Text(str(polling), style="red" if polling == 0 else "")
        )
        table.add_row(
            escape(str(agent.get("name"))),
            escape(str(agent.get("description") or "")),
            escape(params_summary(agent.get("params_schema"))),
            workers,
        )
    out.print(table)
    if any(agent.get("workers_polling") == 0 for agent in agents):
        note("WORKERS 0: no worker has that agent; its runs wait PENDING until one starts")


def print_limits(limits: dict[str, Any]) -> None:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    rows = [
        ("scope kind", limits.get("scope_kind")),
        ("scope", limits.get("scope")),
        ("paused", limits.get("paused")),
        ("slots (N)", limits.get("slots")),
        ("queue max", limits.get("queue_max")),
        ("aging (s)", limits.get("aging_seconds")),
        ("fair shares", limits.get("fair_shares")),
        ("weights", ", ".join(f"{k}={v}" for k, v in (limits.get("weights") or {}).items()) or "-"),
        ("version", limits.get("version")),
        ("changed by", limits.get("changed_by")),
        ("changed at", limits.get("changed_at")),
    ]
    rows += [(f"scope {name}", _own(own)) for name, own in (limits.get("scopes") or {}).items()]
    for name, value in rows:
        if name in ("scope kind", "scope", "paused") and name not in limits:
            continue
        table.add_row(name, escape(str(value if value is not None else "-")))
    out.print(table)


def _own(own: dict[str, Any]) -> str:
    """A scope's own limits in one line."""
    parts = [f"{name}={own[name]}" for name in ("slots", "queue_max") if own.get(name) is not None]
    if own.get("weights") is not None:
        parts.append("weights=" + ",".join(f"{k}:{v}" for k, v in own["weights"].items()))
    if own.get("paused"):
        parts.append("PAUSED")
    return " ".join(parts) or "-"
