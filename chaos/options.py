"""What one chaos run is asked to do, and everything derived from its seed.

The rule: every random choice of a run comes from a generator derived from the seed and a name
(:func:`derived_rng`), one per actor (each client, the schedule, the nemesis), so one actor's
choices do not shift when another makes more or fewer of its own.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from agent_runner.ids import ScopeKind
from devtools.processes import ROOT

AGENT_TYPES = ("policy-checker", "document-extractor")
# Short agents, so that many runs happen; one is picked per run from the seed.
AGENT_DURATIONS = (0.5, 1.0, 1.5, 2.0)
HEARTBEAT_TIMEOUT_SECONDS = 3.0
WORKFLOW_ID = "chaos"


def derived_rng(seed: int, name: str) -> random.Random:
    """The generator of one actor of a run: the same seed and name, the same choices."""
    return random.Random(f"{seed}:{name}")  # noqa: S311 (a seeded schedule, not secrets)


@dataclass(frozen=True)
class ChaosOptions:
    minutes: float
    seed: int
    slots: int = 1
    scope: ScopeKind = ScopeKind.GLOBAL
    users: int = 3
    clients: int = 4
    directory: Path | None = None
    # Fault kinds to use (names); empty: all.
    kinds: tuple[str, ...] = ()
    started_at: float = field(default_factory=time.time)

    @property
    def seconds(self) -> float:
        return self.minutes * 60.0

    def run_directory(self) -> Path:
        if self.directory is not None:
            return self.directory
        moment = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self.started_at))
        return ROOT / ".data" / "chaos" / f"{self.seed}-{moment}"

    def user_ids(self) -> list[str]:
        rng = derived_rng(self.seed, "users")
        return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(self.users)]

    def fair_user_id(self) -> str:
        """The user of the fair-shares phases' runs (:mod:`chaos.fair`): none of the clients'."""
        rng = derived_rng(self.seed, "fair-user")
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    def agent_duration_seconds(self) -> float:
        return derived_rng(self.seed, "duration").choice(AGENT_DURATIONS)
