"""The chaos actors of admission control, without a stack: what the clients ask (priorities,
queue timeouts, attach and replace, from their seed alone), what they learn from an attach's
200, and the limits changer's requests (changes, pauses and fair-shares phases, to an API stand-in
that answers 200)."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from typing import Any

import httpx

from chaos.calls import Calls
from chaos.clients import Client, Known
from chaos.fair import QUEUE_MAX, WEIGHTS
from chaos.history import Op, Recorder, RunConfig
from chaos.limiter import LimitsChanger, fair_phases
from chaos.options import AGENT_TYPES, derived_rng

USERS = ["9b64a3a7-f8e4-4f06-8e57-73b50b042f29", "0c8d1b6e-7f1a-4a53-9a4e-3f1f1e0a2b7c"]


def recorder(slots: int = 2) -> Recorder:
    config = RunConfig(
        seed=1,
        minutes=0.1,
        slots=slots,
        scope="global",
        users=USERS,
        agent_types=list(AGENT_TYPES),
        agent_duration_seconds=1.0,
        heartbeat_timeout_seconds=3.0,
        workflow_id="chaos",
    )
    return Recorder(config)


def start_op(status: int, answer: dict[str, Any], key: str | None = None) -> Op:
    return Op(
        index=0,
        client="c0",
        kind="start",
        phase="chaos",
        api=0,
        request={"body": {"agent_type": AGENT_TYPES[0], "on_busy": "attach"}, "key": key},
        started=1.0,
        ended=2.0,
        status=status,
        body=answer,
    )


def test_an_attachs_200_teaches_a_run_but_no_key_of_a_new_run() -> None:
    known = Known()

    known.learn(start_op(200, {"run_id": "A", "attached": True}, key="k-attach"))
    known.learn(start_op(200, {"run_id": "A", "attached": True}))
    known.learn(start_op(202, {"run_id": "B", "queue_position": 1}, key="k-new"))
    known.learn(start_op(200, {"run_id": "C"}))  # not an attach's answer

    assert known.runs == ["A", "B"]
    assert list(known.keys) == ["k-new"]


def bodies(seed: int, count: int) -> list[tuple[str, dict[str, Any]]]:
    """The first ``count`` starts client c0 of ``seed`` sends (to an API that answers 409)."""
    transport = httpx.MockTransport(lambda request: httpx.Response(409, json={"detail": ""}))

    async def run() -> list[Op]:
        async with httpx.AsyncClient(transport=transport) as http:
            calls = Calls(http, ["http://api"], recorder())
            client = Client(
                "c0", derived_rng(seed, "client-0"), calls, Known(), USERS, AGENT_TYPES, seed
            )
            starts = [
                client.start_reject,
                client.start_enqueue,
                client.start_attach,
                client.start_replace,
            ]
            for _ in range(count):
                await client.rng.choice(starts)()
            return calls.recorder.ops

    return [(op.request["body"]["on_busy"], op.request["body"]) for op in asyncio.run(run())]


def test_starts_carry_seeded_priorities_and_some_enqueued_ones_a_queue_timeout() -> None:
    sent = bodies(seed=7, count=400)

    assert sent == bodies(seed=7, count=400), "the same seed asks the same"
    assert {on_busy for on_busy, _ in sent} == {"reject", "enqueue", "attach", "replace"}
    priorities = Counter(body.get("priority", 3) for _, body in sent)
    assert set(priorities) == {1, 2, 3, 4, 5}
    assert priorities[3] > sum(priorities.values()) / 2, "mostly the default"
    assert any("priority" not in body for _, body in sent), "the default, sometimes left out"
    timed = [(on_busy, body["queue_timeout_seconds"]) for on_busy, body in sent
             if "queue_timeout_seconds" in body]  # fmt: skip
    assert timed
    assert {on_busy for on_busy, _ in timed} == {"enqueue"}
    assert all(2.0 <= timeout <= 30.0 for _, timeout in timed)


def changer_ops(
    slots: int, changes: int, phases: list[tuple[float, float]] | None = None
) -> tuple[list[Op], list[dict[str, Any]]]:
    """What a limits changer asks (of an API that answers 200) until it made ``changes``
    requests, then its restore; the ops and each limits body."""
    bodies: list[dict[str, Any]] = []
    stop = asyncio.Event()
    made = 0

    def api(request: httpx.Request) -> httpx.Response:
        nonlocal made
        made += 1
        if made == changes:
            stop.set()
        if request.method == "PUT":
            assert request.url.path == "/agents/limits"
            bodies.append(json.loads(request.read()))
            return httpx.Response(200, json=bodies[-1])
        assert request.url.path in ("/agents/scopes/global/pause", "/agents/scopes/global/resume")
        return httpx.Response(200, json={"scope": "global"})

    async def run() -> list[Op]:
        history = recorder(slots)
        async with httpx.AsyncClient(transport=httpx.MockTransport(api)) as http:
            calls = Calls(http, ["http://api0", "http://api1"], history)
            changer = LimitsChanger(calls, random.Random(3), slots, 20, ("global", "global"),
                                    60.0, (0.01, 0.02), (0.01, 0.02), phases or [])  # fmt: skip
            await asyncio.wait_for(changer.run(stop), 30.0)
            assert await changer.restore()
        return history.ops

    return asyncio.run(run()), bodies


def test_the_limits_changer_sets_n_pauses_and_puts_both_back() -> None:
    ops, bodies = changer_ops(3, 12)

    assert all(op.status == 200 and op.started <= op.ended for op in ops)
    kinds = [op.kind for op in ops if op.phase == "chaos"]
    assert {"limits", "pause", "resume"} <= set(kinds)
    # Every pause is followed by its resume, before anything else.
    assert all(kinds[n + 1] == "resume" for n, kind in enumerate(kinds) if kind == "pause")
    assert all(1 <= body["slots"] <= 3 and body["fair_shares"] is False for body in bodies)
    assert [(op.kind, op.phase) for op in ops[-2:]] == [("resume", "final"), ("limits", "final")]
    assert bodies[-1] == {"slots": 3, "queue_max": 20, "aging_seconds": 600.0,
                          "fair_shares": False, "weights": WEIGHTS}  # fmt: skip

    one_slot, bodies = changer_ops(1, 4)
    assert {op.kind for op in one_slot} == {"pause", "resume"}, "one slot: no N to change"
    assert bodies == []


def test_a_fair_shares_phase_turns_them_on_with_the_weights_and_off_again() -> None:
    _ops, bodies = changer_ops(2, 60, phases=[(0.0, 0.3)])

    fair = [body["fair_shares"] for body in bodies]
    assert fair[0] is True
    assert fair[-1] is False
    assert fair == sorted(fair, reverse=True), "on, then off for good"
    assert all(body["weights"] == WEIGHTS for body in bodies)
    assert {body["queue_max"] for body in bodies if body["fair_shares"]} == {QUEUE_MAX}
    assert {body["slots"] for body in bodies if body["fair_shares"]} == {2}, "the run's own N"
    assert {body["queue_max"] for body in bodies if not body["fair_shares"]} == {20}


def test_fair_phases_are_seeded_and_fit_the_run() -> None:
    assert fair_phases(random.Random(1), 240.0) == fair_phases(random.Random(1), 240.0)
    ((start, end),) = fair_phases(random.Random(1), 240.0)
    assert 12.0 <= start <= 24.0
    assert end - start == 180.0
    long = fair_phases(random.Random(2), 1800.0)
    assert len(long) > 1
    assert all(end - start == 300.0 for start, end in long[:-1])
    assert long[-1][1] <= 1800.0 * 0.85
    assert fair_phases(random.Random(3), 30.0) == [], "too short a run for a phase"
