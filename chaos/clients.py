"""The chaos clients: concurrent tasks that each pick random actions from a generator of their
own, against a random API, until told to stop.

Actions: start (``reject``, ``enqueue``, ``attach`` or, rarely, ``replace``; half of them with a
fresh Idempotency-Key, and a keyed start that got no answer or a 503 is retried with its key, as
the README tells clients to); repeat a key that got a 202 with its body (expecting its run) or,
rarely, with another body (expecting 422); cancel a known run (mostly a recent one, which may
still wait); read a known run's status, plainly or as a long poll. Each start has a priority,
mostly the default (3), else one of the others (sent, or for 3 sometimes left out), and some
enqueued starts a ``queue_timeout_seconds`` short enough that some expire. What a client learns
(run ids, keys and their bodies) is shared, so one client cancels or reads what another started;
an attach's 200 names a run that exists, not a new one (and its key is no key of a new run).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent_runner.contract import PRIORITY_DEFAULT
from chaos.calls import Calls
from chaos.facts import accepted_id, attached_id
from chaos.history import Op

RETRIES_OF_A_KEYED_START = 3
# The share of starts with the default priority; the others draw one of OTHER_PRIORITIES.
DEFAULT_PRIORITY_SHARE = 0.6
OTHER_PRIORITIES = (1, 2, 4, 5)
# The share of enqueued starts with a queue timeout, and its range: a few seconds (expires
# behind a busy queue) to half a minute (expires only in a long outage).
QUEUE_TIMEOUT_SHARE = 0.3
QUEUE_TIMEOUT_SECONDS = (2.0, 30.0)


@dataclass
class Known:
    """What the clients have learnt so far."""

    runs: list[str] = field(default_factory=list)
    # A key that got a 202, and the body it was sent with.
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)

    def learn(self, op: Op) -> None:
        attached = attached_id(op)
        if attached is not None and attached not in self.runs:
            self.runs.append(attached)
        run_id = accepted_id(op)
        if run_id is None:
            return
        if run_id not in self.runs:
            self.runs.append(run_id)
        key = op.request.get("key")
        if isinstance(key, str) and key not in self.keys:
            self.keys[key] = op.request["body"]


@dataclass
class Client:
    name: str
    rng: random.Random
    calls: Calls
    known: Known
    users: Sequence[str]
    agent_types: Sequence[str]
    seed: int
    _keys_made: int = 0

    def _api(self) -> int:
        return self.rng.randrange(len(self.calls.urls))

    def _body(self, on_busy: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "agent_type": self.rng.choice(self.agent_types),
            "user_id": self.rng.choice(self.users),
            "on_busy": on_busy,
        }
        priority = PRIORITY_DEFAULT
        if self.rng.random() >= DEFAULT_PRIORITY_SHARE:
            priority = self.rng.choice(OTHER_PRIORITIES)
        if priority != PRIORITY_DEFAULT or self.rng.random() < 0.5:
            body["priority"] = priority
        return body

    def _key_or_none(self) -> str | None:
        return self._new_key() if self.rng.random() < 0.5 else None

    def _new_key(self) -> str:
        self._keys_made += 1
        return f"chaos-{self.seed}-{self.name}-{self._keys_made}"

    async def _start(self, body: dict[str, Any], key: str | None) -> None:
        for _ in range(1 + (RETRIES_OF_A_KEYED_START if key else 0)):
            op = await self.calls.start(self.name, "chaos", self._api(), body, key)
            self.known.learn(op)
            if op.status != 503 and op.error is None:
                return
            await asyncio.sleep(self.rng.uniform(0.2, 2.0))

    async def start_reject(self) -> None:
        await self._start(self._body("reject"), self._key_or_none())

    async def start_enqueue(self) -> None:
        body = self._body("enqueue")
        if self.rng.random() < QUEUE_TIMEOUT_SHARE:
            body["queue_timeout_seconds"] = round(self.rng.uniform(*QUEUE_TIMEOUT_SECONDS), 1)
        await self._start(body, self._key_or_none())

    async def start_attach(self) -> None:
        await self._start(self._body("attach"), self._key_or_none())

    async def start_replace(self) -> None:
        await self._start(self._body("replace"), self._key_or_none())

    async def repeat_key(self) -> None:
        if self.known.keys:
            key = self.rng.choice(sorted(self.known.keys))
            await self._start(dict(self.known.keys[key]), key)

    async def repeat_key_other_body(self) -> None:
        if self.known.keys:
            key = self.rng.choice(sorted(self.known.keys))
            body = dict(self.known.keys[key])
            body["agent_type"] = next(t for t in self.agent_types if t != body["agent_type"])
            op = await self.calls.start(self.name, "chaos", self._api(), body, key)
            self.known.learn(op)

    def _a_known_run(self) -> str | None:
        runs = self.known.runs
        if not runs:
            return None
        recent = runs[-10:] if self.rng.random() < 0.7 else runs
        return self.rng.choice(recent)

    async def cancel(self) -> None:
        run_id = self._a_known_run()
        if run_id is not None:
            await self.calls.cancel(self.name, "chaos", self._api(), run_id)

    async def read(self) -> None:
        run_id = self._a_known_run()
        if run_id is not None:
            await self.calls.status(self.name, "chaos", self._api(), run_id)

    async def long_poll(self) -> None:
        run_id = self._a_known_run()
        if run_id is not None:
            wait = round(self.rng.uniform(1.0, 5.0), 1)
            await self.calls.status(self.name, "chaos", self._api(), run_id, wait)

    def actions(self) -> list[tuple[Callable[[], Awaitable[None]], int]]:
        """Each action and its weight."""
        return [
            (self.start_reject, 16),
            (self.start_enqueue, 22),
            (self.start_attach, 6),
            (self.start_replace, 2),
            (self.repeat_key, 8),
            (self.repeat_key_other_body, 3),
            (self.cancel, 8),
            (self.read, 25),
            (self.long_poll, 18),
        ]

    async def run(self, stop: asyncio.Event) -> None:
        actions, weights = zip(*self.actions(), strict=True)
        while not stop.is_set():
            action = self.rng.choices(actions, weights)[0]
            await action()
            pause = self.rng.uniform(0.1, 1.2)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)
