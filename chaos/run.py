"""One chaos run from start to verdict: start the stack, let the clients, the fair-shares
feeders, the limits changer and the nemesis loose, heal, resume and set the limits back, read
every accepted run to its end, probe liveness, stop everything, check.

The rule: every process this run starts is stopped before it returns, whatever happened; the
history and the verdict are written to the run's directory even when the verdict fails.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import httpx

from agent_runner.deployment import CHANGE_WITHIN
from agent_runner.settings import Settings
from chaos.calls import Calls
from chaos.checker import CheckerOptions, check
from chaos.clients import Client, Known
from chaos.facts import accepted_runs, scope_of
from chaos.fair import WEIGHTS, Feeder
from chaos.faults import kinds_named
from chaos.finale import probe, read_until_final
from chaos.history import Recorder, RunConfig, write_history
from chaos.limiter import LimitsChanger
from chaos.logs import read_process_logs
from chaos.nemesis import Nemesis
from chaos.options import (
    AGENT_TYPES,
    HEARTBEAT_TIMEOUT_SECONDS,
    WORKFLOW_ID,
    ChaosOptions,
    derived_rng,
)
from chaos.replays import replay_all
from chaos.report import table, write_verdict
from chaos.schedule import plan
from chaos.stack import ChaosStack
from chaos.verdicts import Verdict

# How long the clients get to finish the request they are making once told to stop.
CLIENTS_STOP_SECONDS = 30.0
QUEUE_MAX = 20


def stack_settings(options: ChaosOptions) -> dict[str, Any]:
    return {
        "task_queue": WORKFLOW_ID,
        "workflow_id": WORKFLOW_ID,
        "agent_slots": options.slots,
        "agent_scope": options.scope,
        "agent_queue_max": QUEUE_MAX,
        "agent_duration_seconds": options.agent_duration_seconds(),
        "agent_heartbeat_timeout_seconds": HEARTBEAT_TIMEOUT_SECONDS,
        "agent_retry_initial_interval_seconds": 0.2,
        "agent_max_attempts": 3,
        "worker_graceful_shutdown_seconds": 3.0,
        "log_level": "INFO",
    }


def limits_made_within_seconds(values: dict[str, Any]) -> float:
    """How long after its API took a limits change up it is in the record or never will be:
    the API's deadline for the record (see api.routes.limits._changed), and a second for the
    two clocks."""
    budget = Settings(_env_file=None, **values).temporal_rpc_timeout_seconds
    return CHANGE_WITHIN * budget + 1.0


def probe_body(scope: str, users: list[str]) -> dict[str, str]:
    """A run of ``scope`` ("global", "user:<id>", "type:<name>") that waits its turn."""
    kind, _, key = scope.partition(":")
    return {
        "agent_type": key if kind == "type" else AGENT_TYPES[0],
        "user_id": key if kind == "user" else users[0],
        "on_busy": "enqueue",
    }


async def _chaos_phase(
    options: ChaosOptions,
    stack: ChaosStack,
    calls: Calls,
    users: list[str],
    limiter: LimitsChanger,
) -> None:
    known = Known()
    clients = [
        Client(
            name=f"c{n}",
            rng=derived_rng(options.seed, f"client-{n}"),
            calls=calls,
            known=known,
            users=users,
            agent_types=AGENT_TYPES,
            seed=options.seed,
        )
        for n in range(options.clients)
    ]
    feeders = [
        Feeder(
            key=key,
            calls=calls,
            rng=derived_rng(options.seed, f"feeder-{key}"),
            agent_type=AGENT_TYPES[0],
            user_id=options.fair_user_id(),
            seed=options.seed,
        )
        for key in WEIGHTS
    ]
    stop = asyncio.Event()
    tasks = [asyncio.ensure_future(client.run(stop)) for client in clients]
    tasks += [asyncio.ensure_future(feeder.run(stop, limiter.phase)) for feeder in feeders]
    tasks.append(asyncio.ensure_future(limiter.run(stop)))
    strikes = plan(
        derived_rng(options.seed, "schedule"), kinds_named(options.kinds), options.seconds
    )
    nemesis = Nemesis(
        stack, calls.recorder, derived_rng(options.seed, "nemesis"), strikes, options.seconds
    )
    try:
        await nemesis.run()
        await nemesis.drain()
    finally:
        stop.set()
        _, late = await asyncio.wait(tasks, timeout=CLIENTS_STOP_SECONDS)
        for task in late:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await nemesis.drain()


async def _finale(
    options: ChaosOptions, calls: Calls, recorder: Recorder, users: list[str]
) -> None:
    accepted = accepted_runs(recorder.history())
    await read_until_final(calls, list(accepted), "final")
    scopes = sorted({run.scope for run in accepted.values()})
    # As many at once as the clients were: a probe asks whether each scope is live again, not
    # how much at once the stack takes (200 new scopes at once on 2 cores is the overload
    # benchmark's question, bench/overload.py).
    at_once = asyncio.Semaphore(options.clients)

    async def one(number: int, scope: str) -> None:
        async with at_once:
            await probe(calls, probe_body(scope, users), f"chaos-{options.seed}-probe-{number}")

    await asyncio.gather(*(one(number, scope) for number, scope in enumerate(scopes)))


async def run_chaos(
    options: ChaosOptions, checking: CheckerOptions | None = None
) -> tuple[Verdict, Path]:
    directory = options.run_directory()
    directory.mkdir(parents=True, exist_ok=True)
    users = options.user_ids()
    config = RunConfig(
        seed=options.seed,
        minutes=options.minutes,
        slots=options.slots,
        scope=options.scope,
        users=users,
        agent_types=list(AGENT_TYPES),
        agent_duration_seconds=options.agent_duration_seconds(),
        heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_SECONDS,
        workflow_id=WORKFLOW_ID,
        limits_made_within_seconds=limits_made_within_seconds(stack_settings(options)),
    )
    recorder = Recorder(config)
    stack = ChaosStack(directory, stack_settings(options), recorder)
    try:
        await stack.start()
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        async with httpx.AsyncClient(limits=limits) as http:
            calls = Calls(http, stack.api_urls, recorder)
            fair_scope = scope_of(options.scope, AGENT_TYPES[0], options.fair_user_id())
            limiter = LimitsChanger(
                calls,
                derived_rng(options.seed, "limits"),
                options.slots,
                QUEUE_MAX,
                (fair_scope, fair_scope.partition(":")[2] or fair_scope),
                options.seconds,
            )
            await _chaos_phase(options, stack, calls, users, limiter)
            await stack.heal()
            await limiter.restore()
            await _finale(options, calls, recorder, users)
        recorder.replays = await replay_all(await stack.client())
    finally:
        with contextlib.suppress(Exception):
            await stack.heal()
        await stack.stop()
    history = recorder.history()
    write_history(history, directory / "history.json")
    verdict = check(history, read_process_logs(history.processes, directory), checking)
    write_verdict(verdict, history, directory / "verdict.json")
    print(table(verdict))
    return verdict, directory
