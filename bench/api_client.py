"""Our side of the benchmarks, as a client of the REST API sees it: start a run, follow it to
its end by long polls or by its event stream, wait until the slot is free."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from devtools.processes import EXAMPLE_USER_ID

POLICY_CHECKER = {"agent_type": "policy-checker", "user_id": EXAMPLE_USER_ID}
FINAL_STATES = ("DONE", "ERROR")
FINAL_EVENTS = ("done", "error")


def sleeper(seconds: float, *, user_id: str = EXAMPLE_USER_ID, **more: Any) -> dict[str, Any]:
    """The body of a run of the bench agent that works ``seconds`` (bench/agents.py)."""
    body = {"agent_type": "bench-sleeper", "user_id": user_id, "params": {"seconds": seconds}}
    return body | more


# How long a start answered 503 is sent again, as the API asks (its Retry-After): a start
# refused so was not made, and a loaded machine (the smoke run beside other tests) refuses some.
START_FOR_SECONDS = 60.0


async def start(http: httpx.AsyncClient, url: str, body: dict[str, Any]) -> str:
    deadline = time.monotonic() + START_FOR_SECONDS
    response = await http.post(f"{url}/agents/run", json=body)
    while response.status_code == 503 and time.monotonic() < deadline:
        await asyncio.sleep(float(response.headers.get("retry-after", "1")))
        response = await http.post(f"{url}/agents/run", json=body)
    response.raise_for_status()
    run_id: str = response.json()["run_id"]
    return run_id


async def status(http: httpx.AsyncClient, url: str, run_id: str) -> dict[str, Any]:
    response = await http.get(f"{url}/agents/status/{run_id}")
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


async def long_poll_to_end(http: httpx.AsyncClient, url: str, run_id: str) -> dict[str, Any]:
    """``GET /agents/status/{id}?wait=30`` until the run has ended; its last status."""
    while True:
        response = await http.get(f"{url}/agents/status/{run_id}", params={"wait": 30})
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        if body["state"] in FINAL_STATES:
            return body


async def stream_to_end(
    http: httpx.AsyncClient,
    url: str,
    run_id: str,
    on_event: Callable[[str, dict[str, Any], float], None] | None = None,
) -> dict[str, Any]:
    """Read the run's event stream until ``done`` or ``error``; its last status. ``on_event``
    gets each event's name, status and wall-clock time of receipt."""
    async with aconnect_sse(http, "GET", f"{url}/agents/runs/{run_id}/events") as source:
        source.response.raise_for_status()
        async for event in source.aiter_sse():
            received = time.time()
            if not event.data:
                continue  # the stream's opening "retry:" field
            body: dict[str, Any] = json.loads(event.data)
            if on_event is not None:
                on_event(event.event, body, received)
            if event.event in FINAL_EVENTS:
                return body
    raise RuntimeError(f"the event stream of {run_id} closed before the run ended")


async def run_and_long_poll(http: httpx.AsyncClient, url: str, body: dict[str, Any]) -> str:
    """POST, then long-poll until the run is DONE; its run id."""
    run_id = await start(http, url, body)
    final = await long_poll_to_end(http, url, run_id)
    assert final["state"] == "DONE", final
    return run_id


async def run_and_stream(http: httpx.AsyncClient, url: str, body: dict[str, Any]) -> str:
    """POST, then read the run's event stream until ``done``; its run id."""
    run_id = await start(http, url, body)
    final = await stream_to_end(http, url, run_id)
    assert final["state"] == "DONE", final
    return run_id


async def wait_running(http: httpx.AsyncClient, url: str, run_id: str) -> None:
    while (await status(http, url, run_id))["state"] != "RUNNING":
        await asyncio.sleep(0.1)


async def wait_idle(http: httpx.AsyncClient, url: str) -> None:
    """Until no run is open (global scope)."""
    while (await http.get(f"{url}/agents/current")).status_code != 404:
        await asyncio.sleep(0.1)


async def cancel(http: httpx.AsyncClient, url: str, run_id: str) -> None:
    await http.post(f"{url}/agents/runs/{run_id}/cancel")
