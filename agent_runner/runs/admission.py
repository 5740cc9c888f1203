"""Sending starts to a scope's coordinator: one update-with-start at a time per scope from this
process, carrying every start that arrived meanwhile (a burst of a thousand starts on one scope
is a handful of updates, decided in order by the coordinator)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from agent_runner.contract import AdmitAnswer, AdmitRequest
from agent_runner.ids import Scope
from agent_runner.runs.batches import ScopeBatches

# Starts sent in one update at most (the update's payload stays well under Temporal's limits).
BATCH_MAX = 200
Send = Callable[[Scope, list[AdmitRequest], str], Awaitable[list[AdmitAnswer]]]


class Admissions:
    """One sender per scope; ``send(scope, requests, update_id)`` makes the call."""

    def __init__(self, send: Send) -> None:
        async def one_update(scope: Scope, requests: list[AdmitRequest]) -> list[AdmitAnswer]:
            return await send(scope, requests, f"admit-{uuid.uuid4()}")

        self._batches: ScopeBatches[AdmitRequest, AdmitAnswer] = ScopeBatches(
            one_update,
            key=lambda request: request.request_id,
            answered=lambda answer: answer.request_id,
            most=BATCH_MAX,
        )

    async def admit(self, scope: Scope, request: AdmitRequest) -> AdmitAnswer:
        answer = await self._batches.ask(scope, request)
        if answer is None:
            raise RuntimeError("the coordinator left a start unanswered")
        return answer
