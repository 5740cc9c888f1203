"""``--wait``: follow a run to its end, live for people or as JSON lines, and exit with its
outcome."""

from __future__ import annotations

import threading
from types import TracebackType

from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from cli.client import ApiClient
from cli.errors import CliError, ExitCode
from cli.follow import RunFollower
from cli.models import RunStatus, transitions
from cli.render import (
    err,
    failure_line,
    print_json,
    print_result,
    state_text,
    status_lines,
    took,
)

# A run is "waiting for a worker" for a few milliseconds between its agent being scheduled and a
# worker taking it; the line is printed only when that lasts.
WORKER_WAIT_SHOWN_AFTER_SECONDS = 1.0


class RunView:
    """A followed run for people, on stderr: a line per change, and on a terminal a live
    progress bar below them."""

    def __init__(self) -> None:
        self.previous: RunStatus | None = None
        self.deferred: threading.Timer | None = None
        self.live = err.is_terminal
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        )
        self.task = self.progress.add_task("waiting", total=None)

    def __enter__(self) -> RunView:
        if self.live:
            self.progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.cancel_deferred()
        if self.live:
            self.progress.stop()

    def show(self, status: RunStatus) -> None:
        self.cancel_deferred()
        for name in transitions(self.previous, status):
            line = self.line(name, status)
            if line is None:
                continue
            if name == "pending" and status.waiting_for == "worker":
                self.deferred = threading.Timer(WORKER_WAIT_SHOWN_AFTER_SECONDS, err.print, [line])
                self.deferred.daemon = True
                self.deferred.start()
            else:
                err.print(line)
        self.previous = status
        if self.live:
            self.update_bar(status)

    def cancel_deferred(self) -> None:
        if self.deferred is not None:
            self.deferred.cancel()
            self.deferred = None

    def line(self, event: str, status: RunStatus) -> Text | None:
        prefix = Text.assemble(state_text(status.state), " ")
        if event == "attempt_failed":
            return Text.assemble(("attempt failed ", "yellow"), failure_line(status))
        if event == "progress":
            if self.live or status.progress is None:
                return None  # the bar shows it
            return Text(f"  {status.progress.fraction:4.0%} {status.progress.message}")
        if event == "running":
            return prefix.append(f"attempt {status.attempt} of run {status.run_id}")
        if event in ("queued", "pending"):
            waiting = [line for line in status_lines(status) if not line.startswith("attempt")]
            return prefix.append(", ".join(waiting) or f"run {status.run_id}")
        if event == "done":
            raw = status.raw
            duration = took(raw.get("started_at"), raw.get("finished_at"))
            return prefix.append(f"attempt {status.attempt}{', ' + duration if duration else ''}")
        if event == "error":
            return prefix.append(status.error)
        return None

    def update_bar(self, status: RunStatus) -> None:
        description = Text.assemble(state_text(status.state), f" attempt {status.attempt}")
        if status.queue_position is not None:
            description = Text.assemble(state_text(status.state), f" #{status.queue_position}")
        if status.progress is not None and status.state == "RUNNING":
            description.append(f"  {status.progress.message}")
            self.progress.update(
                self.task,
                description=description.markup,
                total=1.0,
                completed=status.progress.fraction,
            )
        else:
            self.progress.update(self.task, description=description.markup, total=None)


def follow(api: ApiClient, run_id: str, *, as_json: bool, started: bool = False) -> ExitCode:
    """Follow ``run_id`` to its end; print its result (DONE) or raise with its reason (ERROR).
    Ctrl-C stops following, not the run. ``started``: this command started it (so it exists
    even if the API goes away before it says anything of it)."""
    follower = RunFollower(api, run_id)
    final: RunStatus | None = None
    try:
        if as_json:
            for event in follower.events():
                print_json({"event": event.name, "data": event.status.raw}, lines=True)
                final = event.status
        else:
            with RunView() as view:
                for event in follower.events():
                    view.show(event.status)
                    final = event.status
    except CliError as failure:
        if failure.code != ExitCode.UNAVAILABLE or (final is None and not started):
            raise
        raise CliError(
            f"{failure.message} (run {run_id} goes on: agent-runner status {run_id} --wait)",
            failure.code,
        ) from None
    except KeyboardInterrupt:
        raise CliError(
            f"stopped following run {run_id}; the run goes on. "
            f"Cancel it with: agent-runner cancel {run_id}",
            ExitCode.INTERRUPTED,
        ) from None
    if final is None or not final.is_final:
        raise CliError(
            f"run {run_id}: the API stopped answering before it ended", ExitCode.UNAVAILABLE
        )
    return finish(final, as_json=as_json)


def finish(final: RunStatus, *, as_json: bool) -> ExitCode:
    if as_json:
        print_json(final.raw, lines=True)
    if final.state == "ERROR":
        raise CliError(f"run {final.run_id} ended ERROR: {final.error}", ExitCode.RUN_FAILED)
    if not as_json:
        print_result(final)
    return ExitCode.OK
