"""The start gate (agent_runner/runs/gate.py) as pure asyncio: how many go through, who waits,
who is refused, and how the limit adapts."""

from __future__ import annotations

import asyncio

import pytest

from agent_runner.runs.gate import StartGate, StartsBusyError


async def test_at_most_the_limit_go_through_and_the_others_follow_in_order() -> None:
    gate = StartGate(initial=2)
    release = asyncio.Event()
    order: list[int] = []

    async def one(index: int) -> None:
        async with gate.through(wait=30):
            order.append(index)
            await release.wait()

    tasks = [asyncio.create_task(one(index)) for index in range(5)]
    await asyncio.sleep(0.05)
    assert order == [0, 1]
    assert gate.in_flight == 2
    release.set()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]
    assert gate.in_flight == 0


async def test_a_start_that_waits_a_whole_budget_is_refused_and_leaves_no_place_taken() -> None:
    gate = StartGate(initial=1)
    held = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with gate.through(wait=30):
            held.set()
            await release.wait()

    task = asyncio.create_task(holder())
    await held.wait()
    with pytest.raises(StartsBusyError):
        async with gate.through(wait=0.05):
            pytest.fail("went through a full gate")
    release.set()
    await task
    assert gate.in_flight == 0
    async with gate.through(wait=0):
        assert gate.in_flight == 1


async def test_a_cancelled_waiter_leaves_no_place_taken() -> None:
    gate = StartGate(initial=1)
    release = asyncio.Event()

    async def holder() -> None:
        async with gate.through(wait=30):
            await release.wait()

    task = asyncio.create_task(holder())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(gate.through(wait=30).__aenter__())
    await asyncio.sleep(0.01)
    waiter.cancel()
    release.set()
    await task
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert gate.in_flight == 0
    assert not gate._waiting


async def test_the_limit_halves_once_per_episode_and_grows_back() -> None:
    gate = StartGate(initial=8)
    tickets = []
    for _ in range(3):
        async with gate.through(wait=0) as ticket:
            tickets.append(ticket)
    for ticket in tickets:  # three starts of one episode ran out of their budget
        gate.overran(ticket)
    assert gate.limit == 4
    async with gate.through(wait=0) as later:
        gate.overran(later)  # a start of the next episode
    assert gate.limit == 2
    for _ in range(6):
        gate.answered_in_time()
    assert gate.limit == 8  # back to the initial limit, one place per answer
    for _ in range(2):
        gate.answered_in_time()
    assert gate.limit == pytest.approx(8 + 1 / 8 + 1 / (8 + 1 / 8))  # above it, slowly
    for _ in range(10):
        async with gate.through(wait=0) as ticket:
            gate.overran(ticket)
    assert gate.limit == 1  # never below one


async def test_a_limit_that_grows_lets_a_waiting_start_through() -> None:
    gate = StartGate(initial=1)
    release = asyncio.Event()
    through = asyncio.Event()

    async def holder() -> None:
        async with gate.through(wait=30):
            await release.wait()

    async def waiter() -> None:
        async with gate.through(wait=30):
            through.set()

    tasks = [asyncio.create_task(holder()), asyncio.create_task(waiter())]
    await asyncio.sleep(0.01)
    assert not through.is_set()
    gate.answered_in_time()  # 1 -> 2
    await asyncio.wait_for(through.wait(), 5)
    release.set()
    await asyncio.gather(*tasks)
    assert gate.in_flight == 0
