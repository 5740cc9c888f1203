"""``make bench-scale``: agent-runner with many scopes at once, against raw Temporal starting as
many workflows on distinct ids, on the same dev server, one point after another.

At each point K (10, 100 and 1,000 by default; ``--points 10,100,1000,5000`` for more):

- **starts/s**: K runs, each for another user (``AGENT_SCOPE=user_id``, ``AGENT_SLOTS=3``), each
  holding its slot ``--hold`` seconds, started 20 at a time; raw: K ``start_workflow`` on
  distinct ids, 20 at a time, each running one heartbeating activity as long. Runs per second
  accepted, and what was refused.
- **status p99**: with the K runs working, 5 readers read random runs' status for ``--reads``
  seconds; raw: ``describe`` of random executions.
- **server calls per running agent**: the Temporal frontend calls per second in a window while
  the K agents work (the dev server's Prometheus metrics, the workers' own calls left out, an
  idle window subtracted), divided by K.
- **ended ERROR**: of ours, the accepted runs that did not end ``DONE`` (none should: each
  agent only sleeps).

Writes ``bench/results/scale-latest.json``, the plot ``docs/scale.png`` and the table in
docs/PERFORMANCE.md between its scale markers. Absolute figures depend on the machine; the
curves against raw Temporal's in the same run are the point.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client

from agent_runner.ids import ScopeKind
from agent_runner.process import exit_now
from bench.api_client import sleeper
from bench.executions import fresh_id, start_raw, wait_drained
from bench.measure import percentile, say
from bench.report import write_between
from bench.scenarios.lease import calls_in_window, per_second
from bench.services import BENCH_API, BENCH_WORKER, STACKS, Services, StackSpec
from devtools.processes import ROOT, connect_when_healthy

CONCURRENCY = 20
READERS = 5
SCALE_BEGIN, SCALE_END = "<!-- scale:begin -->", "<!-- scale:end -->"


def _many(services: Services) -> StackSpec:
    """Scopes per user, three slots each; the API waits for Temporal as long as the raw client
    does (a start answers, or the budget runs out, within 30 s)."""
    settings = services.settings(
        "scale",
        agent_scope=ScopeKind.USER_ID,
        agent_slots=3,
        temporal_rpc_timeout_seconds=30.0,
    )
    return StackSpec(settings, {"scale-worker": BENCH_WORKER, "scale-api": BENCH_API})


# Activities one worker runs at once: the SDK's default, on both sides (ours per agent).
WORKER_ACTIVITIES = 100


def _drain_seconds(k: int, hold: float) -> float:
    """How long K runs of ``hold`` seconds may take to end once started: in waves of
    WORKER_ACTIVITIES (raw starts 2,000 in seconds; 20 waves of 45 s outlasted a fixed 645 s)."""
    waves = -(-k // WORKER_ACTIVITIES)
    return waves * hold + 600.0


async def _limited(count: int, one: Callable[[int], Awaitable[Any]]) -> list[Any]:
    """``one(i)`` for i in range(count), ``CONCURRENCY`` at a time."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def gated(index: int) -> Any:
        async with gate:
            return await one(index)

    return list(await asyncio.gather(*(gated(index) for index in range(count))))


async def _reads(read: Callable[[], Awaitable[bool]], seconds: float) -> dict[str, Any]:
    """``READERS`` readers calling ``read`` for ``seconds``: p50/p99 and the failures."""
    times: list[float] = []
    failed = 0
    deadline = time.monotonic() + seconds

    async def reader() -> None:
        nonlocal failed
        while time.monotonic() < deadline:
            began = time.perf_counter()
            ok = await read()
            times.append(time.perf_counter() - began)
            failed += 0 if ok else 1

    await asyncio.gather(*(reader() for _ in range(READERS)))
    return {
        "p50_ms": round(percentile(times, 50) * 1000, 2),
        "p99_ms": round(percentile(times, 99) * 1000, 2),
        "n": len(times),
        "failed": failed,
    }


def _per_agent(window: Counter[str], idle: Counter[str], seconds: float, agents: int) -> float:
    total = float(per_second(window, idle, seconds)["calls_per_second"])
    return round(total / max(1, agents), 3)


async def _ours(
    services: Services, client: Client, http: httpx.AsyncClient, k: int, args: argparse.Namespace
) -> dict[str, Any]:
    stack = services["scale"]
    url, queue = stack.url, stack.settings.task_queue
    answers: list[tuple[int, str | None]] = []

    async def post(_: int) -> None:
        body = sleeper(args.hold, user_id=str(uuid.uuid4()))
        try:
            response = await http.post(f"{url}/agents/run", json=body)
            run_id = response.json().get("run_id") if response.status_code == 202 else None
            answers.append((response.status_code, run_id))
        except httpx.HTTPError:
            answers.append((0, None))

    began = time.perf_counter()
    await _limited(k, post)
    elapsed = time.perf_counter() - began
    run_ids = [run_id for code, run_id in answers if run_id]

    async def status_ok() -> bool:
        response = await http.get(f"{url}/agents/status/{random.choice(run_ids)}")
        return response.status_code == 200

    reads = await _reads(status_ok, args.reads) if run_ids else {}
    window = await calls_in_window(http, services.metrics_url, args.window)
    await wait_drained(client, queue, timeout=_drain_seconds(k, args.hold))

    async def final_state(index: int) -> str:
        response = await http.get(f"{url}/agents/status/{run_ids[index]}")
        return str(response.json().get("state")) if response.status_code == 200 else "unread"

    finals = Counter(await _limited(len(run_ids), final_state))
    return {
        "starts_per_s": round(len(run_ids) / elapsed, 2),
        "accepted": len(run_ids),
        "answers": dict(Counter(str(code) for code, _ in answers)),
        "status": reads,
        "window": window,
        "ended": dict(finals),
    }


async def _raw(
    services: Services, client: Client, k: int, args: argparse.Namespace
) -> dict[str, Any]:
    queue = services["raw"].settings.task_queue
    ids = [fresh_id("bench-scale") for _ in range(k)]
    accepted: list[str] = []

    async def start(index: int) -> None:
        try:
            await start_raw(client, queue, ids[index], args.hold)
            accepted.append(ids[index])
        except Exception:  # a refused start is what is counted
            return

    began = time.perf_counter()
    await _limited(k, start)
    elapsed = time.perf_counter() - began

    async def describe_ok() -> bool:
        try:
            await client.get_workflow_handle(random.choice(accepted)).describe()
        except Exception:  # a failed read is what is counted
            return False
        return True

    reads = await _reads(describe_ok, args.reads) if accepted else {}
    async with httpx.AsyncClient(timeout=60) as http:
        window = await calls_in_window(http, services.metrics_url, args.window)
    await wait_drained(client, queue, timeout=_drain_seconds(k, args.hold))
    return {
        "starts_per_s": round(len(accepted) / elapsed, 2),
        "accepted": len(accepted),
        "status": reads,
        "window": window,
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="agent-runner-bench-scale-"))
    say(f"logs in {directory}")
    services = Services(directory)
    STACKS["scale"] = _many
    services.server.start()
    points: list[dict[str, Any]] = []
    try:
        services.start(["scale", "raw"])
        client = await connect_when_healthy(services.server.address)
        async with httpx.AsyncClient(timeout=120) as http:
            await asyncio.sleep(2.0)
            idle = await calls_in_window(http, services.metrics_url, args.window)
            for k in args.points:
                say(f"scale: {k} scopes, ours")
                ours = await _ours(services, client, http, k, args)
                say(f"scale: {k} scopes, raw Temporal")
                raw = await _raw(services, client, k, args)
                for side in (ours, raw):
                    window = side.pop("window")
                    side["calls_per_agent_per_s"] = _per_agent(window, idle, args.window, k)
                points.append({"scopes": k, "ours": ours, "raw_temporal": raw})
                say(f"  {json.dumps(points[-1])}")
    finally:
        services.stop_all()
    return {
        "points": points,
        "meta": {
            "finished_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "hold_seconds": args.hold,
            "concurrency": CONCURRENCY,
            "readers": READERS,
        },
    }


def table(results: dict[str, Any]) -> list[str]:
    header = [
        "Scopes", "Starts/s ours", "raw", "Accepted ours / raw", "Refused ours",
        "Status p99 ms ours", "raw (describe)", "Calls/s per agent ours", "raw",
        "Ended not DONE (ours)",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for point in results["points"]:
        ours, raw = point["ours"], point["raw_temporal"]
        refused = {code: n for code, n in ours["answers"].items() if code != "202"}
        not_done = {state: n for state, n in ours["ended"].items() if state != "DONE"}
        cells = [
            point["scopes"], ours["starts_per_s"], raw["starts_per_s"],
            f"{ours['accepted']} / {raw['accepted']}", refused or "none",
            ours["status"].get("p99_ms", "—"), raw["status"].get("p99_ms", "—"),
            ours["calls_per_agent_per_s"], raw["calls_per_agent_per_s"], not_done or "none",
        ]  # fmt: skip
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    meta = results["meta"]
    return [
        f"Last scale run: {meta['finished_at']}; each run held its slot "
        f"{meta['hold_seconds']:g} s; starts {meta['concurrency']} at a time; "
        f"{meta['readers']} readers.",
        "",
        *lines,
    ]


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib  # only this command draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scopes = [point["scopes"] for point in results["points"]]
    panels: Sequence[tuple[str, Callable[[dict[str, Any]], float]]] = (
        ("starts/s", lambda side: side["starts_per_s"]),
        ("status p99 (ms)", lambda side: side["status"].get("p99_ms", 0.0)),
        ("server calls/s per agent", lambda side: side["calls_per_agent_per_s"]),
    )
    figure, axes = plt.subplots(1, len(panels), figsize=(13, 4))
    for axis, (title, value) in zip(axes, panels, strict=True):
        for side, label in (("ours", "agent-runner"), ("raw_temporal", "raw Temporal")):
            axis.plot(scopes, [value(point[side]) for point in results["points"]], "o-",
                      label=label)  # fmt: skip
        axis.set_xscale("log")
        axis.set_xlabel("scopes at once")
        axis.set_title(title)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument(
        "--points", type=lambda text: [int(p) for p in text.split(",")], default=[10, 100, 1000]
    )
    parser.add_argument("--hold", type=float, default=45.0, help="seconds each agent works")
    parser.add_argument("--reads", type=float, default=10.0, help="seconds of status reads")
    parser.add_argument("--window", type=float, default=10.0, help="seconds of counted calls")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "PERFORMANCE.md")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "scale.png")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    results = asyncio.run(measure(args))
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "scale-latest.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.plot)
    write_between(args.doc, SCALE_BEGIN, SCALE_END, "\n".join(table(results)))
    say(f"wrote {args.results_dir / 'scale-latest.json'}, {args.plot} and {args.doc}")
    return 0


if __name__ == "__main__":
    exit_now(main(parse_args()))  # not CPython's teardown, which the SDK's threads can abort
