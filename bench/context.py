"""What every scenario gets: the services, a Temporal client, the sizes of this run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from temporalio.client import Client

from bench.services import Services


@dataclass(frozen=True)
class Sizes:
    runs: int = 30  # timed runs per side: overhead, POST→DONE of a 0.2 s agent
    wrk_seconds: float = 10  # per status-read target
    connections: int = 32  # wrk's
    burst: int = 200  # concurrent starts on one slot
    throughput_runs: int = 30  # back-to-back runs per side
    progress_reports: int = 20  # reports of the progress agent
    queue_runs: int = 20  # runs through one queue, for the hand-off gap
    enqueue_burst: int = 100  # concurrent starts, enqueue vs reject
    users: int = 500  # distinct users starting at once (scope user_id)
    one_user_starts: int = 10  # concurrent starts for one user
    lease_window_seconds: float = 72.0  # each window of one working agent's calls (and idle)

    @classmethod
    def smoke(cls) -> Sizes:
        """Tiny: checks that every scenario still runs, measures nothing worth reading."""
        return cls(
            runs=3,
            wrk_seconds=1,
            burst=20,
            throughput_runs=3,
            progress_reports=3,
            queue_runs=4,
            enqueue_burst=10,
            users=20,
            lease_window_seconds=2.0,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Bench:
    services: Services
    client: Client
    sizes: Sizes


@dataclass(frozen=True)
class Scenario:
    """A benchmark: the stacks it needs (started before it), and what it measures."""

    name: str
    stacks: tuple[str, ...]
    run: Callable[[Bench], Awaitable[dict[str, Any]]]
