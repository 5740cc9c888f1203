"""What the real-process scenarios measured, written once the session ends to
.data/reliability/last-run.json; `make reliability-report` turns it into docs/RELIABILITY.md."""

from __future__ import annotations

import json
from typing import Any

from devtools.processes import ROOT

RESULTS_FILE = ROOT / ".data" / "reliability" / "last-run.json"
RESULTS: dict[str, dict[str, Any]] = {}


def record(key: str, scenario: str, outcome: str, runs_lost: int = 0, **figures: Any) -> None:
    """``key`` orders the report: a two-digit number, then a name."""
    RESULTS[key] = {"scenario": scenario, "outcome": outcome, "runs_lost": runs_lost, **figures}


def write() -> None:
    if RESULTS:
        RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
        RESULTS_FILE.write_text(json.dumps(RESULTS, indent=2, default=str, sort_keys=True) + "\n")
