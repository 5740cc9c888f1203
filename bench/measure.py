"""Measuring: clocks, percentiles, ``wrk``, a bare-HTTP burst, process memory."""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def summary(durations: Sequence[float]) -> dict[str, float]:
    """p50, p95, p99 in milliseconds of ``durations`` in seconds, and how many."""
    return {
        "p50_ms": ms(statistics.median(durations)),
        "p95_ms": ms(percentile(durations, 95)),
        "p99_ms": ms(percentile(durations, 99)),
        "n": len(durations),
    }


async def timed_rounds(
    count: int, steps: Mapping[str, Callable[[], Awaitable[Any]]], label: str
) -> dict[str, list[float]]:
    """Each step once per round, ``count`` rounds, timed one by one: interleaved, so a change
    of load on a shared machine weighs on every side alike."""
    durations: dict[str, list[float]] = {name: [] for name in steps}
    for index in range(count):
        for name, step in steps.items():
            started = time.perf_counter()
            await step()
            durations[name].append(time.perf_counter() - started)
        if (index + 1) % max(1, count // 5) == 0:
            say(f"  {label}: {index + 1}/{count}")
    return durations


WRK_LINE = re.compile(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$")


def wrk(url: str, seconds: float, connections: int) -> dict[str, float]:
    """``wrk`` (Debian's package) against ``url``: requests/s and latency percentiles."""
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


@dataclass(frozen=True)
class Answer:
    status: int
    seconds: float  # from sending the request to its status line
    body: Any


async def http_burst(port: int, path: str, bodies: Sequence[Mapping[str, Any]]) -> list[Answer]:
    """One POST per body, all at once over connections opened beforehand, each timed from
    send to answer.

    A bare HTTP/1.1 client, so the measurement is the server's answer time, not a client
    library's CPU on the same two cores; connections are opened first, as the raw Temporal
    client's channel is.
    """
    requests = [_post(path, body) for body in bodies]
    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in requests]
    go = asyncio.Event()

    async def one(
        request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Answer:
        await go.wait()
        started = time.perf_counter()
        writer.write(request)
        status_line = await reader.readline()
        elapsed = time.perf_counter() - started
        rest = await reader.read()
        writer.close()
        body = rest.partition(b"\r\n\r\n")[2]
        return Answer(int(status_line.split()[1]), elapsed, json.loads(body) if body else None)

    tasks = [
        asyncio.ensure_future(one(request, *connection))
        for request, connection in zip(requests, connections, strict=True)
    ]
    await asyncio.sleep(0)
    go.set()
    return list(await asyncio.gather(*tasks))


def _post(path: str, body: Mapping[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + data


def burst_summary(answers: Sequence[Answer], accepted_status: int = 202) -> dict[str, Any]:
    return {
        **summary([answer.seconds for answer in answers]),
        "accepted": sum(1 for answer in answers if answer.status == accepted_status),
        "statuses": sorted({answer.status for answer in answers}),
    }


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def load_average() -> tuple[float, float, float]:
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return float(one), float(five), float(fifteen)
