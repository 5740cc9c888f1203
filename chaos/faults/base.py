"""What a fault kind is: a small class the nemesis instantiates once per injection.

The rule: a fault names the targets it may hit (no two faults hit one target at once), what it
makes unavailable while it lasts (``affects``: "server", "api<i>", "worker<i>", read by the
checker to excuse a 503), and whether it is a server outage; it injects, holds for a time the
nemesis drew, and heals. Adding a kind is adding a class to :data:`chaos.faults.ALL_KINDS`.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from chaos.stack import ChaosStack


class NothingToStrike(Exception):
    """The fault found nothing to hit (no open run to terminate, say): recorded as skipped."""


class Fault(ABC):
    kind: ClassVar[str]
    # How long the fault holds before it heals (seconds), drawn by the nemesis.
    hold_range: ClassVar[tuple[float, float]] = (0.0, 0.0)

    def __init__(self, target: str, hold_seconds: float, rng: random.Random) -> None:
        self.target = target
        self.hold_seconds = hold_seconds
        self.rng = rng

    @classmethod
    @abstractmethod
    def targets(cls, stack: ChaosStack) -> list[str]:
        """The targets this kind may hit now (lock names: "worker0", "api1", "server"...)."""

    @property
    def affects(self) -> list[str]:
        return [self.target]

    @property
    def outage_cause(self) -> str | None:
        """Set for a fault that makes the server unavailable: the outage's cause."""
        return None

    async def prepare(self, stack: ChaosStack) -> dict[str, Any]:
        """Wait for the moment to strike (an agent working, say); details for the record."""
        return {}

    @abstractmethod
    async def inject(self, stack: ChaosStack) -> dict[str, Any]:
        """Do it; details for the record. Raises :class:`NothingToStrike` when it cannot."""

    async def heal(self, stack: ChaosStack) -> dict[str, Any]:
        """Undo it; details for the record."""
        return {}


def index_of(target: str) -> int:
    """The process index in a target name ("worker1" -> 1)."""
    return int(target[len(target.rstrip("0123456789")) :])
