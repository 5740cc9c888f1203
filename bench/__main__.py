"""``make bench``: agent-runner against raw Temporal and the seed's in-memory design, same run.

Starts what it needs (a Temporal dev server, workers, API processes, the in-memory app), runs
the benchmarks, writes raw results to bench/results/ and the table to docs/PERFORMANCE.md.
Absolute times on shared machines vary from run to run; the ratios against baselines measured
in the same run are what the goals are about.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from agent_runner.models import WORKFLOW_TYPE, AgentRunInput
from agent_runner.settings import Settings
from devtools.processes import (
    EXAMPLE_USER_ID,
    ROOT,
    ChildProcess,
    DevServer,
    free_port,
    stop_in_order,
    wait_until_serving,
)

USER_ID = EXAMPLE_USER_ID

PAYLOAD = {"agent_type": "policy-checker", "user_id": USER_ID}


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


@dataclass
class Services:
    """Every process a benchmark talks to, and where."""

    directory: Path
    server: DevServer
    fast: Settings  # agent duration 0: orchestration overhead and throughput
    slow: Settings  # agent duration 10 min: a run that stays RUNNING
    fast_uncached: Settings
    processes: dict[str, ChildProcess] = field(default_factory=dict)
    inmemory_url: str = ""

    def url(self, name: str) -> str:
        settings = {"fast": self.fast, "slow": self.slow, "uncached": self.fast_uncached}[name]
        return f"http://127.0.0.1:{settings.api_port}"

    def stop(self) -> None:
        stop_in_order(list(self.processes.values()), self.server)


async def start_services(directory: Path) -> Services:
    server = DevServer(
        db_file=directory / "temporal.db",
        port=free_port(),
        ui_port=None,
        log_path=directory / "temporal.log",
    )
    server.start()

    def settings(name: str, duration: float, **more: Any) -> Settings:
        return Settings(
            _env_file=None,  # type: ignore[call-arg]
            temporal_address=server.address,
            task_queue=f"bench-{name}",
            workflow_id=f"bench-{name}",
            agent_duration_seconds=duration,
            api_port=free_port(),
            log_level="INFO",
            **more,
        )

    fast = settings("fast", 0.0)
    slow = settings("slow", 600.0)
    uncached = fast.model_copy(update={"api_port": free_port(), "api_status_cache_size": 0})
    services = Services(directory, server, fast, slow, uncached)
    launch = {
        "worker-fast": lambda log: ChildProcess.worker(fast, log),
        "worker-slow": lambda log: ChildProcess.worker(slow, log),
        "api-fast": lambda log: ChildProcess.api(fast, log),
        "api-slow": lambda log: ChildProcess.api(slow, log),
        "api-uncached": lambda log: ChildProcess.api(uncached, log),
    }
    for name, start in launch.items():
        services.processes[name] = start(directory / f"{name}.log")
    inmemory = fast.model_copy(update={"api_port": free_port()})
    services.processes["inmemory"] = ChildProcess(
        [sys.executable, "-m", "bench.inmemory_app"], inmemory, directory / "inmemory.log"
    )
    services.inmemory_url = f"http://127.0.0.1:{inmemory.api_port}"
    for url in (services.url("fast"), services.url("slow"), services.url("uncached")):
        wait_until_serving(f"{url}/readyz", timeout=60)
    wait_until_serving(f"{services.inmemory_url}/docs", timeout=60)
    return services


# --- helpers for "ours" -----------------------------------------------------------------------


async def run_through_api(http: httpx.AsyncClient, url: str) -> str:
    """POST, then long-poll the status until DONE; returns the run id."""
    response = await http.post(f"{url}/agents/run", json=PAYLOAD)
    response.raise_for_status()
    run_id: str = response.json()["run_id"]
    while True:
        body = (await http.get(f"{url}/agents/status/{run_id}", params={"wait": 30})).json()
        if body["state"] in ("DONE", "ERROR"):
            assert body["state"] == "DONE", body
            return run_id


async def run_raw(client: Client, settings: Settings, workflow_id: str) -> None:
    await client.execute_workflow(
        WORKFLOW_TYPE,
        AgentRunInput(agent_type="policy-checker", user_id=USER_ID),
        id=workflow_id,
        task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
    )


async def timed(count: int, step: Callable[[], Awaitable[Any]], label: str) -> list[float]:
    durations = []
    for index in range(count):
        started = time.perf_counter()
        await step()
        durations.append(time.perf_counter() - started)
        if (index + 1) % max(1, count // 5) == 0:
            say(f"  {label}: {index + 1}/{count}")
    return durations


def summary(durations: list[float]) -> dict[str, float]:
    return {
        "p50_ms": ms(statistics.median(durations)),
        "p95_ms": ms(percentile(durations, 95)),
        "p99_ms": ms(percentile(durations, 99)),
        "n": len(durations),
    }


# --- the benchmarks ------------------------------------------------------------------------------


async def bench_overhead(services: Services, client: Client, runs: int) -> dict[str, Any]:
    say(f"1/5 orchestration overhead: {runs} runs each, agent duration 0")
    async with httpx.AsyncClient(timeout=60) as http:
        await run_through_api(http, services.url("fast"))  # warm-up
        await run_raw(client, services.fast, "bench-raw")
        ours = await timed(runs, lambda: run_through_api(http, services.url("fast")), "ours")
    raw = await timed(runs, lambda: run_raw(client, services.fast, "bench-raw"), "raw")
    return {"ours": summary(ours), "raw_temporal": summary(raw)}


WRK_LINE = re.compile(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$")


def wrk(url: str, seconds: float, connections: int) -> dict[str, float]:
    command = [
        "wrk", "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", url,
    ]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    result: dict[str, float] = {}
    for line in output.splitlines():
        if match := WRK_LINE.match(line):
            result[f"p{match.group(1)}_ms"] = round(
                float(match.group(2)) * scale[match.group(3)], 2
            )
        elif line.startswith("Requests/sec:"):
            result["requests_per_s"] = float(line.split()[1])
        elif "Non-2xx or 3xx responses" in line:
            result["non_2xx"] = float(line.split()[-1])
    return result


async def bench_status_reads(
    services: Services, seconds: float, connections: int
) -> dict[str, Any]:
    say(f"2/5 status reads: wrk, {connections} connections, {seconds:g} s per target")
    async with httpx.AsyncClient(timeout=60) as http:
        finished = await run_through_api(http, services.url("fast"))
        uncached_finished = await run_through_api(http, services.url("uncached"))
        running = (await http.post(f"{services.url('slow')}/agents/run", json=PAYLOAD)).json()[
            "run_id"
        ]
        while (await http.get(f"{services.url('slow')}/agents/status/{running}")).json()[
            "state"
        ] != "RUNNING":
            await asyncio.sleep(0.1)
        mem_finished = (
            await http.post(f"{services.inmemory_url}/agents/run", json=PAYLOAD)
        ).json()["run_id"]
        await asyncio.sleep(0.2)
        mem_running = (
            await http.post(
                f"{services.inmemory_url}/agents/run", json={**PAYLOAD, "duration_seconds": 600}
            )
        ).json()["run_id"]
    uncached = services.url("uncached")
    targets = {
        "ours_finished": f"{services.url('fast')}/agents/status/{finished}",
        "ours_finished_without_cache": f"{uncached}/agents/status/{uncached_finished}",
        "ours_running": f"{services.url('slow')}/agents/status/{running}",
        "inmemory_finished": f"{services.inmemory_url}/agents/status/{mem_finished}",
        "inmemory_running": f"{services.inmemory_url}/agents/status/{mem_running}",
    }
    results = {}
    for name, url in targets.items():
        say(f"  {name}")
        results[name] = wrk(url, seconds, connections)
    async with httpx.AsyncClient(timeout=60) as http:
        await http.post(f"{services.url('slow')}/agents/runs/{running}/cancel")
    return results


async def bench_burst(services: Services, client: Client, size: int) -> dict[str, Any]:
    say(f"3/5 burst: {size} concurrent starts while idle")
    url = services.url("slow")
    async with httpx.AsyncClient(timeout=60) as http:
        await wait_idle(http, url)
        answers = await http_burst(services.slow.api_port, "/agents/run", PAYLOAD, size)
        accepted = [code for code, _ in answers if code == 202]
        current = (await http.get(f"{url}/agents/current")).json()
        await http.post(f"{url}/agents/runs/{current['run_id']}/cancel")
        await wait_idle(http, url)

    raw_id = f"bench-raw-burst-{uuid.uuid4()}"

    async def one_start() -> tuple[bool, float]:
        started = time.perf_counter()
        try:
            await client.start_workflow(
                WORKFLOW_TYPE,
                AgentRunInput(agent_type="policy-checker", user_id=USER_ID),
                id=raw_id,
                task_queue="bench-nobody",
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            )
            won = True
        except WorkflowAlreadyStartedError:
            won = False
        return won, time.perf_counter() - started

    raw = await asyncio.gather(*(one_start() for _ in range(size)))
    await client.get_workflow_handle(raw_id).terminate("benchmark cleanup")
    return {
        "ours": {**summary([seconds for _, seconds in answers]), "accepted": len(accepted)},
        "raw_temporal": {
            **summary([seconds for _, seconds in raw]),
            "accepted": sum(1 for won, _ in raw if won),
        },
    }


async def http_burst(
    port: int, path: str, payload: dict[str, Any], size: int
) -> list[tuple[int, float]]:
    """``size`` POSTs at once over connections opened beforehand, timed from send to answer.

    A bare HTTP/1.1 client, so the measurement is the server's answer time, not a client
    library's CPU on the same two cores; connections are opened first, as the raw Temporal
    client's channel is.
    """
    body = json.dumps(payload).encode()
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(size)]
    go = asyncio.Event()

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[int, float]:
        await go.wait()
        started = time.perf_counter()
        writer.write(request)
        status_line = await reader.readline()
        elapsed = time.perf_counter() - started
        await reader.read()
        writer.close()
        return int(status_line.split()[1]), elapsed

    tasks = [asyncio.ensure_future(one(reader, writer)) for reader, writer in connections]
    await asyncio.sleep(0)
    go.set()
    return list(await asyncio.gather(*tasks))


async def wait_idle(http: httpx.AsyncClient, url: str) -> None:
    while (await http.get(f"{url}/agents/current")).status_code != 404:
        await asyncio.sleep(0.1)


async def bench_throughput(services: Services, client: Client, runs: int) -> dict[str, Any]:
    say(f"4/5 back-to-back throughput: {runs} runs each, agent duration 0")
    async with httpx.AsyncClient(timeout=60) as http:
        started = time.perf_counter()
        for _ in range(runs):
            await run_through_api(http, services.url("fast"))
        ours = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(runs):
        await run_raw(client, services.fast, "bench-raw")
    raw = time.perf_counter() - started
    return {
        "ours": {"runs_per_minute": round(runs / ours * 60, 1), "n": runs},
        "raw_temporal": {"runs_per_minute": round(runs / raw * 60, 1), "n": runs},
    }


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def bench_memory(services: Services) -> dict[str, Any]:
    say("5/5 memory (RSS after the benchmarks)")
    return {name: rss_mib(process.pid) for name, process in services.processes.items()}


# --- report ------------------------------------------------------------------------------------


def ratio(ours: float, baseline: float) -> float:
    return round(ours / baseline, 2) if baseline else float("inf")


def table(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row a goal: what we measured, the baseline, the ratio, the goal and whether it is met."""
    rows: list[dict[str, Any]] = []

    def row(name: str, ours: float, base: float, unit: str, goal: str, met: bool) -> None:
        rows.append(
            {"benchmark": name, "ours": f"{ours:g} {unit}", "baseline": f"{base:g} {unit}",
             "ratio": ratio(ours, base), "goal": goal, "met": met}
        )  # fmt: skip

    overhead = results["overhead"]
    for pct in ("p50", "p95"):
        ours, raw = overhead["ours"][f"{pct}_ms"], overhead["raw_temporal"][f"{pct}_ms"]
        row(f"1. POST→DONE overhead {pct} (vs raw start→result)", ours, raw, "ms", "≤ 1.2x",
            ratio(ours, raw) <= 1.2)  # fmt: skip
    reads = results["status_reads"]
    for kind, goal in (("finished", 0.8), ("running", 0.3)):
        ours = reads[f"ours_{kind}"]["requests_per_s"]
        base = reads[f"inmemory_{kind}"]["requests_per_s"]
        row(f"2. status reads, {kind} run, req/s (vs in-memory)", ours, base, "req/s",
            f"≥ {goal}x", ratio(ours, base) >= goal)  # fmt: skip
    ours = reads["ours_finished_without_cache"]["requests_per_s"]
    base = reads["inmemory_finished"]["requests_per_s"]
    row("2. status reads, finished run, cache off (before)", ours, base, "req/s", "(report)", True)
    burst = results["burst"]
    ours, raw = burst["ours"]["p99_ms"], burst["raw_temporal"]["p99_ms"]
    row("3. burst answers p99 (vs raw start_workflow)", ours, raw, "ms", "≤ 1.5x",
        ratio(ours, raw) <= 1.5)  # fmt: skip
    throughput = results["throughput"]
    ours = throughput["ours"]["runs_per_minute"]
    raw = throughput["raw_temporal"]["runs_per_minute"]
    row("4. back-to-back runs/min (vs raw)", ours, raw, "runs/min", "≥ 0.8x",
        ratio(ours, raw) >= 0.8)  # fmt: skip
    memory = results["memory"]
    row("5. RSS, API (vs in-memory app)", memory["api-fast"], memory["inmemory"], "MiB",
        "(report)", True)  # fmt: skip
    row("5. RSS, worker (vs in-memory app)", memory["worker-fast"], memory["inmemory"], "MiB",
        "(report)", True)  # fmt: skip
    return rows


def markdown(results: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = [
        "| Benchmark | Ours | Baseline | Ratio | Goal | Met |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        met = "yes" if r["met"] else "**no**"
        lines.append(
            f"| {r['benchmark']} | {r['ours']} | {r['baseline']} | {r['ratio']} | {r['goal']} "
            f"| {met} |"
        )
    reads = results["status_reads"]
    detail = ["", "Status reads in detail (wrk):", "", "| Target | req/s | p50 ms | p99 ms |",
              "|---|---|---|---|"]  # fmt: skip
    for name, figures in reads.items():
        detail.append(
            f"| {name} | {figures.get('requests_per_s', 0):g} | {figures.get('p50_ms', 0):g} "
            f"| {figures.get('p99_ms', 0):g} |"
        )
    burst = results["burst"]
    detail += [
        "",
        f"Burst: ours accepted {burst['ours']['accepted']} of {burst['ours']['n']} "
        f"(p50 {burst['ours']['p50_ms']} ms); raw accepted {burst['raw_temporal']['accepted']} "
        f"(p50 {burst['raw_temporal']['p50_ms']} ms).",
    ]
    meta = results["meta"]
    head = (
        f"Run {meta['finished_at']} on {meta['machine']} ({meta['cpus']} CPUs), sizes: "
        f"{meta['sizes']}."
    )
    return head + "\n\n" + "\n".join(lines + detail)


def write_doc(doc: Path, body: str) -> None:
    begin, end = "<!-- results:begin -->", "<!-- results:end -->"
    text = doc.read_text() if doc.exists() else f"# Performance\n\n{begin}\n{end}\n"
    start, stop = text.index(begin) + len(begin), text.index(end)
    doc.write_text(text[:start] + "\n" + body + "\n" + text[stop:])


async def main(args: argparse.Namespace) -> int:
    if shutil.which("wrk") is None:
        say("wrk is not installed: `make bench` installs it (apt-get install wrk)")
        return 2
    directory = Path(tempfile.mkdtemp(prefix="agent-runner-bench-"))
    say(f"starting services (logs in {directory})")
    services = await start_services(directory)
    try:
        client = await Client.connect(services.server.address)
        results: dict[str, Any] = {
            "overhead": await bench_overhead(services, client, args.runs),
            "status_reads": await bench_status_reads(services, args.seconds, args.connections),
            "burst": await bench_burst(services, client, args.burst),
            "throughput": await bench_throughput(services, client, args.throughput_runs),
        }
        results["memory"] = bench_memory(services)
    finally:
        services.stop()
    results["meta"] = {
        "finished_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.system()} {platform.machine()}, Python {platform.python_version()}",
        "cpus": __import__("os").cpu_count(),
        "sizes": {
            "runs": args.runs,
            "wrk_seconds": args.seconds,
            "connections": args.connections,
            "burst": args.burst,
            "throughput_runs": args.throughput_runs,
        },
    }
    rows = table(results)
    results["table"] = rows
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for name in (f"{stamp}.json", "latest.json"):
        (args.results_dir / name).write_text(json.dumps(results, indent=2) + "\n")
    write_doc(args.doc, markdown(results, rows))
    say(f"wrote {args.results_dir / 'latest.json'} and {args.doc}")
    for r in rows:
        say(f"  {r['benchmark']}: {r['ours']} vs {r['baseline']} = {r['ratio']} ({r['goal']})")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--runs", type=int, default=30, help="runs for the overhead benchmark")
    parser.add_argument("--seconds", type=float, default=10, help="wrk duration per target")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--burst", type=int, default=200, help="concurrent starts in the burst")
    parser.add_argument("--throughput-runs", type=int, default=30, help="back-to-back runs")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "PERFORMANCE.md")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes, to check the benchmarks still run"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.runs, args.seconds, args.burst, args.throughput_runs = 3, 1, 20, 3
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
