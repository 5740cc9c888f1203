"""The benchmarks must not rot: run `python -m bench --smoke` (tiny sizes) and check it wrote
its results. No figure is asserted: tests check behaviour, not speed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT


def run_module(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m module args``, as `make` runs it, from the project's root."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (make test installs it)"
)
def test_bench_smoke_run_writes_results_and_the_table(tmp_path: Path) -> None:
    doc = tmp_path / "PERFORMANCE.md"
    completed = run_module("bench", "--smoke", "--results-dir", str(tmp_path), "--doc", str(doc))

    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((tmp_path / "latest.json").read_text())
    scenarios = {
        "overhead", "throughput", "reads_finished", "reads_running", "burst", "progress",
        "post_to_done", "handoff", "enqueue", "users", "one_user", "lease_cost",
    }  # fmt: skip
    assert scenarios | {"memory", "checks", "table"} <= results.keys()
    assert all(results["checks"].values()), results["checks"]
    assert "| Benchmark | Ours | Baseline | Ratio | Goal | Met |" in doc.read_text()


def test_bench_scale_smoke_run_writes_the_table_and_the_plot(tmp_path: Path) -> None:
    doc, plot = tmp_path / "PERFORMANCE.md", tmp_path / "scale.png"
    sizes = ["--points", "2,4", "--hold", "2", "--reads", "1", "--window", "1"]
    places = ["--results-dir", str(tmp_path), "--doc", str(doc), "--plot", str(plot)]
    completed = run_module("bench.scale", *sizes, *places)

    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((tmp_path / "scale-latest.json").read_text())
    assert [point["scopes"] for point in results["points"]] == [2, 4]
    assert all(point["ours"]["accepted"] == point["scopes"] for point in results["points"])
    assert "| Scopes |" in doc.read_text()
    assert plot.stat().st_size > 0
