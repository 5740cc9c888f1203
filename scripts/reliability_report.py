"""Render docs/RELIABILITY.md's measured table from .data/reliability/last-run.json.

``make reliability-report`` runs the reliability suite, then this.
"""

from __future__ import annotations

import json
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / ".data" / "reliability" / "last-run.json"
DOC = ROOT / "docs" / "RELIABILITY.md"
BEGIN, END = "<!-- measured:begin -->", "<!-- measured:end -->"


def measured(results: dict[str, dict[str, Any]]) -> str:
    rows = ["| # | Scenario | Outcome | Runs lost | Measured |", "|---|---|---|---|---|"]
    for key, result in sorted(results.items()):
        figures = {
            name: value
            for name, value in result.items()
            if name not in ("scenario", "outcome", "runs_lost", "rounds")
        }
        if "rounds" in result:
            seconds = [round_["seconds"] for round_ in result["rounds"]]
            figures["burst_seconds_per_round"] = ", ".join(f"{s:g}" for s in seconds)
        shown = "; ".join(f"{name.replace('_', ' ')}: {value}" for name, value in figures.items())
        rows.append(
            f"| {key.split('_', 1)[0].lstrip('0')} | {result['scenario']} | {result['outcome']} "
            f"| {result['runs_lost']} | {shown or '-'} |"
        )
    stamp = datetime.fromtimestamp(RESULTS.stat().st_mtime, UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.system()} {platform.machine()}, Python {platform.python_version()}"
    return f"Last run: {stamp} on {machine}.\n\n" + "\n".join(rows)


def main() -> int:
    if not RESULTS.exists():
        print(f"{RESULTS} is missing: run `pytest -m reliability` first", file=sys.stderr)
        return 1
    table = measured(json.loads(RESULTS.read_text()))
    doc = DOC.read_text()
    start, end = doc.index(BEGIN) + len(BEGIN), doc.index(END)
    DOC.write_text(doc[:start] + "\n" + table + "\n" + doc[end:])
    print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
