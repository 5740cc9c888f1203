"""What the real-process scenarios measured (tests/test_reliability.py fills ``RESULTS``),
written once the session ends to .data/reliability/last-run.json; `make reliability-report`
turns it into docs/RELIABILITY.md."""

from __future__ import annotations

import json
from typing import Any

from devtools.processes import ROOT

RESULTS_FILE = ROOT / ".data" / "reliability" / "last-run.json"
RESULTS: dict[str, dict[str, Any]] = {}


def write() -> None:
    if RESULTS:
        RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
        RESULTS_FILE.write_text(json.dumps(RESULTS, indent=2, default=str, sort_keys=True) + "\n")
