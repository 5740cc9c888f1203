"""When the nemesis strikes, and with what: drawn from the seed before the run begins.

The rule: every kind asked for strikes at least once, in a seeded order, spread over the first
three quarters of the run (so each has time to hold and heal before the clients stop); more
strikes of random kinds come on top, one every ``mean_gap_seconds`` on average.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from chaos.faults import Fault

# Share of the run in which the guaranteed strikes happen, and the extra ones.
GUARANTEED_SHARE = 0.75
EXTRA_SHARE = 0.85


@dataclass(frozen=True)
class Strike:
    at: float  # seconds after the clients began
    kind: type[Fault]
    guaranteed: bool


def plan(
    rng: random.Random,
    kinds: Sequence[type[Fault]],
    seconds: float,
    mean_gap_seconds: float = 10.0,
) -> list[Strike]:
    order = list(kinds)
    rng.shuffle(order)
    step = seconds * GUARANTEED_SHARE / max(len(order), 1)
    strikes = [
        Strike(at=step * (number + rng.uniform(0.1, 0.6)), kind=kind, guaranteed=True)
        for number, kind in enumerate(order)
    ]
    at = rng.expovariate(1.0 / mean_gap_seconds)
    while kinds and at < seconds * EXTRA_SHARE:
        strikes.append(Strike(at=at, kind=rng.choice(list(kinds)), guaranteed=False))
        at += rng.expovariate(1.0 / mean_gap_seconds)
    return sorted(strikes, key=lambda strike: strike.at)
