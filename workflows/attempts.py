"""What a run's attempts tell it as they go (:class:`~agent_runner.models.AgentEvent` signals),
kept for the Temporal Web UI: the run's current details say which attempt works, how far it
is, and why the one before failed."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from agent_runner.models import AgentEvent, AgentEventKind


class Attempts:
    def __init__(self) -> None:
        self.attempt = 0
        self.max_attempts = 0
        self.progress: tuple[float, str] | None = None
        self.last_failure: str | None = None

    def apply(self, event: AgentEvent) -> None:
        if event.attempt < self.attempt:
            return  # a late signal of an earlier attempt
        if event.kind == AgentEventKind.ATTEMPT_STARTED or event.attempt > self.attempt:
            self.attempt, self.progress = event.attempt, None
        if event.kind == AgentEventKind.PROGRESS and event.fraction is not None:
            self.progress = (event.fraction, event.message or "")
        elif event.kind == AgentEventKind.ATTEMPT_FAILED:
            retry = "; it will be retried" if event.retrying else ""
            self.last_failure = f"attempt {event.attempt} failed: {event.reason}{retry}"
        workflow.set_current_details(self.details())

    def details(self) -> str:
        """Markdown for the Web UI's "Current details"."""
        lines = [f"**Attempt {self.attempt} of {self.max_attempts or '?'}** is working."]
        if self.progress is not None:
            fraction, message = self.progress
            lines.append(f"Progress: **{fraction:.0%}** {message}".rstrip())
        if self.last_failure:
            lines.append(f"Before it, {self.last_failure}.")
        return "\n\n".join(lines)
