"""The chaos actors of admission control, without a stack: what the clients ask (priorities,
queue timeouts, attach and replace, from their seed alone), what they learn from an attach's
200, and the limits changer's requests (to an API stand-in that answers 200)."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from typing import Any

import httpx

from chaos.calls import Calls
from chaos.clients import Client, Known
from chaos.history import Op, Recorder, RunConfig
from chaos.limiter import LimitsChanger
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


def test_the_limits_changer_sets_n_within_the_runs_own_and_puts_it_back() -> None:
    asked: list[int] = []
    stop = asyncio.Event()

    def api(request: httpx.Request) -> httpx.Response:
        assert (request.method, request.url.path) == ("PUT", "/agents/limits")
        asked.append(json.loads(request.read())["slots"])
        if len(asked) == 6:
            stop.set()
        return httpx.Response(200, json={"slots": asked[-1]})

    async def run(slots: int) -> list[Op]:
        history = recorder(slots)
        async with httpx.AsyncClient(transport=httpx.MockTransport(api)) as http:
            calls = Calls(http, ["http://api0", "http://api1"], history)
            changer = LimitsChanger(calls, random.Random(3), slots, gap_seconds=(0.01, 0.02))
            await asyncio.wait_for(changer.run(stop), 30.0)
            assert await changer.restore()
        return history.ops

    ops = asyncio.run(run(3))
    assert len(ops) == 7  # six changes (the generator's: 2, 3, 2, 1, 3, 2), then back to 3
    assert all(op.kind == "limits" and op.status == 200 for op in ops)
    assert all(op.started <= op.ended for op in ops)
    assert [op.phase for op in ops] == ["chaos"] * (len(ops) - 1) + ["final"]
    assert asked == [2, 3, 2, 1, 3, 2, 3]

    asked.clear()
    stop.clear()
    assert asyncio.run(run(1)) == [], "one slot: nothing to change, nothing to put back"
    assert asked == []
