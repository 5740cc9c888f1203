"""Finished runs' status bodies, rendered once: a finished run never changes, so reading it
again costs no Temporal call and no serialization."""

from __future__ import annotations

from cachetools import LRUCache

from agent_runner.runs import RunStatus

# Run ids seen finished are remembered even with the cache off, so metrics count each run once.
_SEEN_AT_LEAST = 4096


class FinishedRuns:
    def __init__(self, maxsize: int = 4096) -> None:
        self._enabled = maxsize > 0
        self._bodies: LRUCache[str, bytes] = LRUCache(maxsize=max(maxsize, 1))
        self._seen: LRUCache[str, bool] = LRUCache(maxsize=max(maxsize, _SEEN_AT_LEAST))

    def get(self, run_id: str) -> bytes | None:
        return self._bodies.get(run_id) if self._enabled else None

    def remember(self, status: RunStatus, body: bytes) -> bool:
        """Keep a final status's body; True the first time this process sees the run finished."""
        if not status.is_final or status.run_id in self._seen:
            return False
        self._seen[status.run_id] = True
        if self._enabled:
            self._bodies[status.run_id] = body
        return True
