"""``make bench-overload``: many users at once against one deployment with its default
settings, and what each of them was answered.

``--users`` distinct users (2,000 by default; ``AGENT_SCOPE=user_id``, ``AGENT_SLOTS=3``), each
starting one run of an agent that works ``--hold`` seconds, 20 users at a time (a start
answered ``503`` is sent again after its ``Retry-After``, as the API documents; ``--no-again``
counts it and goes on), while 5
readers read beside them: the status of a run already accepted, ``/agents/runs?limit=50`` and
``/agents/queue?limit=50`` in turn. The API keeps its default RPC budget (2 s), so a busy server
shows as refusals. What must hold (issue 20): every start is ``202`` or a documented refusal
(``503`` with ``Retry-After``), no read is a ``5xx`` other than such a ``503``, and every
accepted run ends ``DONE`` (the agent only sleeps: any ``ERROR`` is ours).

Prints the verdict and writes ``bench/results/overload-latest.json``. Exit 0 when it holds.
Run it with the machine as loaded as you want to claim (say, beside one busy core).
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from agent_runner.ids import ScopeKind
from agent_runner.process import exit_now
from bench.api_client import sleeper
from bench.measure import percentile, say
from bench.services import BENCH_API, BENCH_WORKER, STACKS, Services, StackSpec
from devtools.processes import ROOT

CONCURRENCY = 20
READERS = 5
READS = ("status", "runs", "queue")


def _defaults(services: Services) -> StackSpec:
    """Scopes per user, three slots each; every other setting its default."""
    settings = services.settings("overload", agent_scope=ScopeKind.USER_ID, agent_slots=3)
    return StackSpec(settings, {"overload-worker": BENCH_WORKER, "overload-api": BENCH_API})


def _acceptable(code: int, retry_after: str | None) -> bool:
    """A start's or a read's answer that is no failure of ours: done, or refused as documented."""
    return code in (200, 202) or (code == 503 and retry_after is not None)


async def _run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    starts: Counter[str] = Counter()
    bad: list[str] = []
    accepted: list[str] = []
    waits: list[float] = []  # from a user's first ask to its 202
    reads: dict[str, Counter[str]] = {kind: Counter() for kind in READS}
    users = iter(range(args.users))
    done_starting = asyncio.Event()

    async with httpx.AsyncClient(timeout=60) as http:

        async def starter() -> None:
            for _ in users:
                body = sleeper(args.hold, user_id=str(uuid.uuid4()))
                asked = time.perf_counter()
                while True:
                    try:
                        response = await http.post(f"{url}/agents/run", json=body)
                    except httpx.HTTPError as err:
                        starts["no answer"] += 1
                        bad.append(f"start: {type(err).__name__}")
                        break
                    code, retry_after = response.status_code, response.headers.get("retry-after")
                    starts[str(code)] += 1
                    if code == 202:
                        accepted.append(response.json()["run_id"])
                        waits.append(time.perf_counter() - asked)
                    elif not _acceptable(code, retry_after):
                        bad.append(f"start: {code} {response.text[:200]}")
                    if code != 503 or not args.again:
                        break
                    # As a client following the documentation does: the same start, after the
                    # pause the answer asked for.
                    await asyncio.sleep(float(retry_after or 1))

        async def reader(index: int) -> None:
            turn = index
            while not done_starting.is_set():
                kind = READS[turn % len(READS)]
                turn += 1
                if kind == "status":
                    if not accepted:
                        await asyncio.sleep(0.1)
                        continue
                    path = f"/agents/status/{random.choice(accepted)}"
                else:
                    path = f"/agents/{kind}?limit=50"
                try:
                    response = await http.get(url + path)
                except httpx.HTTPError as err:
                    reads[kind]["no answer"] += 1
                    bad.append(f"{kind}: {type(err).__name__}")
                    continue
                reads[kind][str(response.status_code)] += 1
                if not _acceptable(response.status_code, response.headers.get("retry-after")):
                    bad.append(f"{kind}: {response.status_code} {response.text[:200]}")

        began = time.perf_counter()
        readers = [asyncio.ensure_future(reader(index)) for index in range(READERS)]
        await asyncio.gather(*(starter() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - began
        done_starting.set()
        await asyncio.gather(*readers)
        say(f"  {args.users} users in {elapsed:.0f} s: {dict(starts)}; waiting for the runs")

        ended: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + args.drain
        while len(ended) < len(accepted) and time.monotonic() < deadline:
            for run_id in [run_id for run_id in accepted if run_id not in ended]:
                try:
                    response = await http.get(f"{url}/agents/status/{run_id}")
                except httpx.HTTPError:
                    continue
                if response.status_code == 200 and response.json()["state"] in ("DONE", "ERROR"):
                    ended[run_id] = response.json()
            if len(ended) < len(accepted):
                await asyncio.sleep(2.0)

    states = Counter(body["state"] for body in ended.values())
    errors = Counter(
        str(body["result"])[:160] for body in ended.values() if body["state"] != "DONE"
    )
    open_runs = len(accepted) - len(ended)
    return {
        "finished_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "users": args.users,
        "hold_seconds": args.hold,
        "concurrency": CONCURRENCY,
        "readers": READERS,
        "start_seconds": round(elapsed, 1),
        "accepted_per_s": round(len(accepted) / elapsed, 2),
        "answers": dict(starts),
        "ask_to_accept_s": {
            "p50": round(percentile(waits, 50), 2) if waits else None,
            "p99": round(percentile(waits, 99), 2) if waits else None,
            "max": round(max(waits), 2) if waits else None,
        },
        "accepted": len(accepted),
        "reads": {kind: dict(codes) for kind, codes in reads.items()},
        "ended": dict(states),
        "still_open": open_runs,
        "errors": dict(errors),
        "failures": bad[:50],
        "holds": not bad and not errors and not open_runs,
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="agent-runner-bench-overload-"))
    say(f"logs in {directory}")
    services = Services(directory)
    STACKS["overload"] = _defaults
    services.server.start()
    try:
        services.start(["overload"])
        return await _run(args, services["overload"].url)
    finally:
        services.stop_all()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.overload", description=__doc__)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--hold", type=float, default=10.0, help="seconds each agent works")
    parser.add_argument(
        "--drain", type=float, default=1800.0, help="seconds to wait for the runs to end"
    )
    parser.add_argument(
        "--no-again",
        dest="again",
        action="store_false",
        help="count a 503 and go on to the next user instead of asking again after Retry-After",
    )
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    results = asyncio.run(measure(args))
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "overload-latest.json").write_text(json.dumps(results, indent=2) + "\n")
    say(json.dumps(results, indent=2))
    say("holds" if results["holds"] else "DOES NOT HOLD")
    return 0 if results["holds"] else 1


if __name__ == "__main__":
    exit_now(main(parse_args()))
