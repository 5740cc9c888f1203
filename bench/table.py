"""From results to the table's rows: one row a figure, with our value, the baseline's, their
ratio, the goal and whether it is met. A section missing from the results (a scenario left out
with ``--only``) gives no rows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Row = dict[str, Any]
# "≤" or "≥" and the ratio; None: reported, no goal.
Goal = tuple[str, float] | None


def ratio(ours: float, baseline: float) -> float:
    if baseline == 0:
        return 1.0 if ours == 0 else float("inf")
    return round(ours / baseline, 2)


def row(name: str, ours: float, base: float | None, unit: str, goal: Goal = None) -> Row:
    value = ratio(ours, base) if base is not None else None
    met = None
    if goal is not None and value is not None:
        met = value <= goal[1] if goal[0] == "≤" else value >= goal[1]
    return {
        "benchmark": name,
        "ours": f"{ours:g} {unit}",
        "baseline": f"{base:g} {unit}" if base is not None else "—",
        "ratio": value,
        "goal": f"{goal[0]} {goal[1]:g}x" if goal else "(report)",
        "met": met,
    }


# What each leg of a run is, ours (raw Temporal's in brackets); bench/executions.py LEGS.
LEG_NAMES = {
    "admitted": "POST → the run's workflow started (API, coordinator, child start) [start call]",
    "agent_started": "→ agent started (its claim) [activity started]",
    "agent_ended": "→ agent ended (its report; the agent takes 0 s) [activity completed]",
    "closed": "→ the run's workflow closed",
    "answered": "→ the client has DONE (the slot is free) [the client has the result]",
}


def _overhead(section: dict[str, Any]) -> list[Row]:
    ours, raw = section["ours"], section["raw_temporal"]
    rows = [
        row(f"1. POST→DONE overhead {pct} (vs raw start→result)", ours[f"{pct}_ms"],
            raw[f"{pct}_ms"], "ms", ("≤", 1.2))
        for pct in ("p50", "p95")
    ]  # fmt: skip
    for name, leg in section.get("legs", {}).items():
        rows.append(
            row(f"1. leg p50: {LEG_NAMES[name]}", leg["ours_p50_ms"], leg["raw_p50_ms"], "ms")
        )
    return rows


def _reads(reads: dict[str, Any]) -> list[Row]:
    rows = []
    for kind in ("finished", "running"):
        if f"ours_{kind}" in reads:
            rows.append(
                row(f"2. status reads, {kind} run, req/s (vs in-memory)",
                    reads[f"ours_{kind}"]["requests_per_s"],
                    reads[f"inmemory_{kind}"]["requests_per_s"], "req/s", ("≥", 1.0))
            )  # fmt: skip
    if "ours_finished_without_cache" in reads:
        rows.append(
            row("2. status reads, finished run, cache off (before)",
                reads["ours_finished_without_cache"]["requests_per_s"],
                reads["inmemory_finished"]["requests_per_s"], "req/s")
        )  # fmt: skip
    return rows


def _burst(section: dict[str, Any]) -> list[Row]:
    before = section["before"]
    return [
        row("3. burst answers p99 (vs raw start_workflow)", section["ours"]["p99_ms"],
            section["raw_temporal"]["p99_ms"], "ms", ("≤", 1.5)),
        row(f"3. burst answers p99, before issue 9 ({before['commit']}, {before['measured_at']})",
            before["ours"]["p99_ms"], before["raw_temporal"]["p99_ms"], "ms"),
    ]  # fmt: skip


def _throughput(section: dict[str, Any]) -> list[Row]:
    return [
        row("4. back-to-back runs/min (vs raw)", section["ours"]["runs_per_minute"],
            section["raw_temporal"]["runs_per_minute"], "runs/min", ("≥", 0.8))
    ]  # fmt: skip


def _memory(memory: dict[str, float]) -> list[Row]:
    base = memory.get("inmemory")
    return [
        row(f"5. RSS, {label} (vs in-memory app)", memory[process], base, "MiB")
        for label, process in (("API", "api-fast"), ("worker", "worker-fast"))
        if process in memory
    ]


def _progress(section: dict[str, Any]) -> list[Row]:
    return [
        row(f"6. progress report → SSE subscriber {pct}", section[f"{pct}_ms"], None, "ms")
        for pct in ("p50", "p95")
    ]


def _post_to_done(section: dict[str, Any]) -> list[Row]:
    """The overhead is the time beyond the agent's own work, on both sides: a ratio of totals
    that include the agent's seconds hides most of it."""
    raw, seconds = section["raw_temporal"], section["agent_seconds"]
    own = seconds * 1000.0
    rows = []
    for client in ("streaming", "long_polling"):
        label = client.replace("_", "-")
        ours = section[client]
        for pct in ("p50", "p95"):
            rows.append(
                row(f"6. overhead beyond the {seconds:g} s agent, {label} client {pct} "
                    "(POST→DONE minus the agent's time, vs raw start→result minus it)",
                    round(ours[f"{pct}_ms"] - own, 2), round(raw[f"{pct}_ms"] - own, 2), "ms",
                    ("≤", 1.2) if pct == "p50" else None)
            )  # fmt: skip
        rows.append(
            row(f"6. POST→DONE, {seconds:g} s agent, {label} client p50, agent included "
                "(vs raw start→result)", ours["p50_ms"], raw["p50_ms"], "ms")
        )  # fmt: skip
    return rows


def _handoff(section: dict[str, Any]) -> list[Row]:
    return [
        row("7. queue hand-off gap p50, finished_at→next started_at (vs raw close→next start)",
            section["ours"]["p50_ms"], section["raw_temporal"]["p50_ms"], "ms", ("≤", 1.2)),
        row("7. queue hand-off gap p50, agent end→next agent start (vs raw)",
            section["ours_agent"]["p50_ms"], section["raw_agent"]["p50_ms"], "ms"),
    ]  # fmt: skip


def _enqueue(section: dict[str, Any]) -> list[Row]:
    rows = [
        row(
            "7. enqueue answers p99 (vs reject answers, same concurrency)",
            section["enqueue"]["p99_ms"],
            section["reject"]["p99_ms"],
            "ms",
            ("≤", 1.5),
        )
    ]
    raw = section.get("raw_update_with_start")
    if raw is not None:
        floor = section["reject"]["p99_ms"] + raw["p99_ms"]
        rows.append(
            row(
                "7. enqueue answers p99 (vs the floor: reject p99 + raw update-with-start p99)",
                section["enqueue"]["p99_ms"],
                round(floor, 2),
                "ms",
            )
        )
    return rows  # fmt: skip


def _users(section: dict[str, Any]) -> list[Row]:
    n = section["ours"]["n"]
    return [
        row(f"8. user scope: {n} users at once, answers p99 (vs raw start_workflow, distinct ids)",
            section["ours"]["p99_ms"], section["raw_temporal"]["p99_ms"], "ms", ("≤", 1.5))
    ]  # fmt: skip


def _one_user(section: dict[str, Any]) -> list[Row]:
    accepted = section["accepted"]
    return [
        {
            "benchmark": f"8. user scope: {section['n']} starts at once for one user, accepted",
            "ours": str(accepted),
            "baseline": "—",
            "ratio": None,
            "goal": "exactly 1",
            "met": accepted == 1,
        }
    ]


def _lease_cost(section: dict[str, Any]) -> list[Row]:
    heartbeat = section["heartbeat_timeout_seconds"]
    return [
        row(f"9. server calls per second while one agent works (vs raw heartbeating activity, "
            f"heartbeat timeout {heartbeat:g} s; idle calls subtracted)",
            section["ours"]["calls_per_second"], section["raw_temporal"]["calls_per_second"],
            "calls/s", ("≤", 2.0)),
    ]  # fmt: skip


SECTIONS: dict[str, Callable[[Any], list[Row]]] = {
    "overhead": _overhead,
    "reads": _reads,
    "burst": _burst,
    "throughput": _throughput,
    "memory": _memory,
    "progress": _progress,
    "post_to_done": _post_to_done,
    "handoff": _handoff,
    "enqueue": _enqueue,
    "users": _users,
    "one_user": _one_user,
    "lease_cost": _lease_cost,
}


def status_reads(results: dict[str, Any]) -> dict[str, Any]:
    """Every wrk target of both status-read scenarios."""
    return {**results.get("reads_finished", {}), **results.get("reads_running", {})}


def table(results: dict[str, Any]) -> list[Row]:
    sections = {**results, "reads": status_reads(results)}
    rows = []
    for name, rows_of in SECTIONS.items():
        if sections.get(name):
            rows += rows_of(sections[name])
    return rows


def checks(results: dict[str, Any]) -> dict[str, bool]:
    """What must hold whatever the speed: exactly one start on a free slot wins, a user
    scope takes every user, an enqueue takes every start."""
    found = {}
    if "burst" in results:
        found["burst: exactly one start accepted"] = results["burst"]["ours"]["accepted"] == 1
        found["burst: raw, exactly one accepted"] = (
            results["burst"]["raw_temporal"]["accepted"] == 1
        )
    if "users" in results:
        ours = results["users"]["ours"]
        found["user scope: every user accepted"] = ours["accepted"] == ours["n"]
    lease = results.get("lease_cost")
    if lease is not None and lease["window_seconds"] >= 30:
        # Long enough that each side heartbeats: zero means the metrics were not read.
        sides = (lease["ours"], lease["raw_temporal"])
        found["lease cost: heartbeats counted on both sides"] = all(s["heartbeats"] for s in sides)
    if "one_user" in results:
        found["user scope: one run for one user"] = results["one_user"]["accepted"] == 1
    if "enqueue" in results:
        enqueue = results["enqueue"]["enqueue"]
        found["enqueue: every start accepted"] = enqueue["accepted"] == enqueue["n"]
    return found
