"""``make bench``: agent-runner against raw Temporal and the seed's in-memory design, same run.

Starts one Temporal dev server, then for each scenario the processes it needs (stopped once no
later scenario needs them), runs the benchmarks, writes raw results to bench/results/ and the
table to docs/PERFORMANCE.md. Absolute times on shared machines vary from run to run; the ratios
against baselines measured in the same run are what the goals are about. Exits 1 when a check
(exactly one start wins, every user is accepted...) fails; a missed goal is only reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent_runner.process import exit_now
from bench.context import Bench, Scenario, Sizes
from bench.measure import load_average, say
from bench.report import markdown, write_doc
from bench.scenarios import burst, lease, orchestration, queue, reads, scopes, streaming
from bench.services import Services
from bench.table import checks, table
from devtools.processes import ROOT, connect_when_healthy

# In this order; each after the stacks it names have started.
SCENARIOS = [
    Scenario("overhead", ("fast", "raw"), orchestration.overhead),
    Scenario("throughput", ("fast", "raw"), orchestration.throughput),
    Scenario("reads_finished", ("fast", "uncached", "inmemory"), reads.finished),
    Scenario("reads_running", ("slow", "inmemory"), reads.running),
    Scenario("burst", ("slow", "raw"), burst.burst),
    Scenario("progress", ("agents",), streaming.progress_latency),
    Scenario("post_to_done", ("agents", "raw"), streaming.post_to_done),
    Scenario("handoff", ("agents", "raw"), queue.handoff),
    Scenario("enqueue", ("agents", "raw"), queue.enqueue_answers),
    Scenario("lease_cost", ("agents", "raw"), lease.lease_cost),
    Scenario("users", ("users", "raw"), scopes.many_users),
    Scenario("one_user", ("users",), scopes.one_user),
]


async def run_scenarios(services: Services, sizes: Sizes, chosen: list[Scenario]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    client = await connect_when_healthy(services.server.address)
    bench = Bench(services, client, sizes)
    for index, scenario in enumerate(chosen):
        services.start(scenario.stacks)
        results[scenario.name] = await scenario.run(bench)
        later = {stack for next_one in chosen[index + 1 :] for stack in next_one.stacks}
        for name in [name for name in services.stacks if name not in later]:
            services.stop(name)
    return results


async def main(args: argparse.Namespace) -> int:
    if shutil.which("wrk") is None:
        say("wrk is not installed: `make bench` installs it (apt-get install wrk)")
        return 2
    chosen = [s for s in SCENARIOS if not args.only or s.name in args.only]
    directory = Path(tempfile.mkdtemp(prefix="agent-runner-bench-"))
    say(f"logs in {directory}")
    load_before = load_average()[0]
    services = Services(directory)
    services.server.start()
    try:
        results = await run_scenarios(services, args.sizes, chosen)
    finally:
        services.stop_all()
    results["memory"] = services.memory
    results["checks"] = checks(results)
    results["meta"] = {
        "finished_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.system()} {platform.machine()}, Python {platform.python_version()}",
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": load_average()[0],
        "sizes": args.sizes.as_dict(),
    }
    rows = table(results)
    results["table"] = rows
    write_results(args, results, rows)
    failed = [name for name, ok in results["checks"].items() if not ok]
    for name in failed:
        say(f"CHECK FAILED: {name}")
    return 1 if failed else 0


def write_results(args: argparse.Namespace, results: dict[str, Any], rows: list[Any]) -> None:
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for name in (f"{stamp}.json", "latest.json"):
        (args.results_dir / name).write_text(json.dumps(results, indent=2) + "\n")
    write_doc(args.doc, markdown(results, rows))
    say(f"wrote {args.results_dir / 'latest.json'} and {args.doc}")
    for r in rows:
        say(f"  {r['benchmark']}: {r['ours']} vs {r['baseline']} = {r['ratio']} ({r['goal']})")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    defaults = Sizes()
    for name, value in defaults.as_dict().items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "PERFORMANCE.md")
    parser.add_argument(
        "--only",
        type=lambda names: names.split(","),
        default=None,
        help=f"comma-separated scenarios, of: {', '.join(s.name for s in SCENARIOS)}",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes, to check the benchmarks still run"
    )
    args = parser.parse_args(argv)
    unknown = set(args.only or ()) - {scenario.name for scenario in SCENARIOS}
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    given = {name: getattr(args, name) for name in defaults.as_dict()}
    args.sizes = Sizes.smoke() if args.smoke else Sizes(**given)
    return args


if __name__ == "__main__":
    exit_now(asyncio.run(main(parse_args())))  # not CPython's teardown (the SDK's threads)
