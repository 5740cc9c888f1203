"""The results as markdown, written into docs/PERFORMANCE.md between its markers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.table import Row, status_reads

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _table(header: list[str], lines: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(cell) for cell in line) + " |" for line in lines]
    return out


def _met(value: bool | None) -> str:
    return "—" if value is None else "yes" if value else "**no**"


def _main_table(rows: list[Row]) -> list[str]:
    return _table(
        ["Benchmark", "Ours", "Baseline", "Ratio", "Goal", "Met"],
        [
            [r["benchmark"], r["ours"], r["baseline"], "—" if r["ratio"] is None else r["ratio"],
             r["goal"], _met(r["met"])]
            for r in rows
        ],
    )  # fmt: skip


def _reads(results: dict[str, Any]) -> list[str]:
    reads = status_reads(results)
    if not reads:
        return []
    lines = [
        [name, f.get("requests_per_s", 0), f.get("p50_ms", 0), f.get("p99_ms", 0)]
        for name, f in reads.items()
    ]
    return ["", "Status reads in detail (wrk):", "", *_table(["Target", "req/s", "p50 ms",
            "p99 ms"], lines)]  # fmt: skip


def _burst(results: dict[str, Any]) -> list[str]:
    burst = results.get("burst")
    if not burst:
        return []
    before = burst["before"]
    lines = [
        [f"before ({before['commit']}, {before['measured_at']})", *_burst_cells(before)],
        ["after (this run)", *_burst_cells(burst)],
    ]
    header = ["Burst of starts on one slot", "ours p50 ms", "ours p99 ms", "raw p50 ms",
              "raw p99 ms", "p99 ratio", "accepted (ours, raw)"]  # fmt: skip
    return ["", "Issue 9, burst answers before and after:", "", *_table(header, lines)]


def _burst_cells(section: dict[str, Any]) -> list[Any]:
    ours, raw = section["ours"], section["raw_temporal"]
    return [
        ours["p50_ms"], ours["p99_ms"], raw["p50_ms"], raw["p99_ms"],
        round(ours["p99_ms"] / raw["p99_ms"], 2), f"{ours['accepted']}, {raw['accepted']}",
    ]  # fmt: skip


def _latencies(results: dict[str, Any]) -> list[str]:
    """Every latency distribution of issues 12 and 13 in one table."""
    named: list[tuple[str, dict[str, Any]]] = []
    if done := results.get("post_to_done"):
        named += [(f"POST→DONE, {client}", done[key]) for client, key in (
            ("streaming", "streaming"), ("long-polling", "long_polling"),
            ("raw start→result", "raw_temporal"))]  # fmt: skip
    if progress := results.get("progress"):
        seen = f"{progress['seen']} of {progress['reports']} reports seen"
        named.append((f"progress report → SSE subscriber ({seen})", progress))
    if handoff := results.get("handoff"):
        named += [(f"hand-off gap, {label}", handoff[key]) for label, key in (
            ("finished_at→started_at", "ours"), ("raw close→next start", "raw_temporal"),
            ("agent→agent", "ours_agent"), ("raw agent→agent", "raw_agent"))]  # fmt: skip
    for key, label in (("enqueue", "enqueue answers"), ("reject", "reject answers")):
        if enqueue := results.get("enqueue"):
            named.append((f"{label} ({enqueue[key]['accepted']} accepted)", enqueue[key]))
    if users := results.get("users"):
        named += [(f"user scope, {side} ({users[key]['accepted']} accepted)", users[key])
                  for side, key in (("ours", "ours"), ("raw", "raw_temporal"))]  # fmt: skip
    if not named:
        return []
    lines = [[name, f["p50_ms"], f["p95_ms"], f["p99_ms"], f["n"]] for name, f in named]
    header = ["Distribution", "p50 ms", "p95 ms", "p99 ms", "n"]
    return ["", "Latencies in detail:", "", *_table(header, lines)]


def markdown(results: dict[str, Any], rows: list[Row]) -> str:
    meta = results["meta"]
    head = (
        f"Run {meta['finished_at']} on {meta['machine']} ({meta['cpus']} CPUs); load average "
        f"(1 min) {meta['load_before']} before the run, {meta['load_after']} after; sizes: "
        f"{meta['sizes']}."
    )
    checks = results.get("checks", {})
    check_line = "Checks: " + "; ".join(
        f"{name}: {'yes' if ok else '**NO**'}" for name, ok in checks.items()
    )
    body = [
        head, "", *_main_table(rows), *_burst(results), *_latencies(results), *_reads(results),
        "", check_line + ".",
    ]  # fmt: skip
    return "\n".join(body)


def write_doc(doc: Path, body: str) -> None:
    write_between(doc, BEGIN, END, body)


def write_between(doc: Path, begin: str, end: str, body: str) -> None:
    """Put ``body`` between the markers ``begin`` and ``end`` of ``doc`` (added at its end when
    it has none)."""
    text = doc.read_text() if doc.exists() else "# Performance\n"
    if begin not in text or end not in text:
        text = text.rstrip("\n") + f"\n\n{begin}\n{end}\n"
    start, stop = text.index(begin) + len(begin), text.index(end)
    doc.write_text(text[:start] + "\n" + body + "\n" + text[stop:])
