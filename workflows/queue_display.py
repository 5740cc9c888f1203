"""What others see of a queue: its memo (where each run it accepted is, ``r:<run id>``, which
is how status reads find queued runs), the AgentQueueDepth search attribute, the Web UI's
current details, and the time runs waited (a metric)."""

from __future__ import annotations

from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from agent_runner import search_attributes
    from agent_runner.locations import Scope
    from agent_runner.queue_types import QueueEntry, QueueState

_SHOWN_IN_DETAILS = 20


class QueueDisplay:
    def __init__(self, scope: Scope) -> None:
        self._scope = scope
        self._memo: dict[str, Any] = {}
        self._wait_seconds = workflow.metric_meter().create_histogram_float(
            "agent_runner_queue_wait_seconds", "Time runs spent in a queue before starting.", "s"
        )

    def record(self, run_id: str, where: dict[str, Any]) -> None:
        """Where a run is now; written to the memo at the next :meth:`publish`."""
        self._memo[f"r:{run_id}"] = where

    def started(self, entry: QueueEntry, slot: int, temporal_run_id: str) -> None:
        self.record(
            entry.run_id,
            {
                "state": "started",
                "slot": slot,
                "temporal_run_id": temporal_run_id,
                "started_at": workflow.now().isoformat(),
            },
        )
        waited = (workflow.now() - entry.enqueued_at).total_seconds()
        self._wait_seconds.record(waited, {"scope_kind": self._scope.kind.value})

    def publish(self, state: QueueState) -> None:
        """Memo (where each run is), the depth search attribute and the Web UI's details."""
        if self._memo:
            workflow.upsert_memo(self._memo)
            self._memo = {}
        workflow.upsert_search_attributes(
            [search_attributes.QUEUE_DEPTH.value_set(len(state.queue))]
        )
        waiting = state.queue[:_SHOWN_IN_DETAILS]
        lines = [
            f"{i}. {entry.run_input.agent_type} for {entry.run_input.user_id} "
            f"(`{entry.run_id}`, since {entry.enqueued_at:%H:%M:%S} UTC)"
            for i, entry in enumerate(waiting, 1)
        ]
        more = len(state.queue) - len(waiting)
        workflow.set_current_details(
            f"**{len(state.queue)} runs waiting** for the "
            f"{state.config.slots} slot(s) of `{self._scope.id}`"
            + ("\n\n" + "\n".join(lines) if lines else "")
            + (f"\n\n... and {more} more" if more > 0 else "")
        )


def queued(entry: QueueEntry) -> dict[str, Any]:
    return {
        "state": "queued",
        "agent_type": entry.run_input.agent_type,
        "user_id": entry.run_input.user_id,
        "enqueued_at": entry.enqueued_at.isoformat(),
    }


def carried(state: QueueState) -> dict[str, Any]:
    """The next execution's memo: where each run it carries is, from its first moment."""
    memo = {f"r:{entry.run_id}": queued(entry) for entry in state.queue}
    for run_id, claimed in state.claimed.items():
        memo[f"r:{run_id}"] = {"state": "claimed", "slot": claimed.slot}
    return memo
