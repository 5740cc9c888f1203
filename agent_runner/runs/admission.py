"""Sending starts to a scope's coordinator: one update-with-start at a time per scope from this
process, carrying every start that arrived meanwhile (a burst of a thousand starts on one scope
is a handful of updates, decided in order by the coordinator)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from agent_runner.contract import AdmitAnswer, AdmitRequest
from agent_runner.ids import Scope

# Starts sent in one update at most (the update's payload stays well under Temporal's limits).
BATCH_MAX = 200
Send = Callable[[Scope, list[AdmitRequest], str], Awaitable[list[AdmitAnswer]]]


@dataclass
class _Waiting:
    request: AdmitRequest
    answer: asyncio.Future[AdmitAnswer]


@dataclass
class _Scope:
    scope: Scope
    waiting: list[_Waiting] = field(default_factory=list)
    sender: asyncio.Task[None] | None = None


class Admissions:
    """One sender per scope; ``send(scope, requests, update_id)`` makes the call."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._scopes: dict[str, _Scope] = {}

    async def admit(self, scope: Scope, request: AdmitRequest) -> AdmitAnswer:
        pending = self._scopes.setdefault(scope.id, _Scope(scope))
        answer: asyncio.Future[AdmitAnswer] = asyncio.get_running_loop().create_future()
        pending.waiting.append(_Waiting(request, answer))
        if pending.sender is None or pending.sender.done():
            pending.sender = asyncio.create_task(self._drain(pending))
        return await answer

    async def _drain(self, pending: _Scope) -> None:
        while pending.waiting:
            batch, pending.waiting = pending.waiting[:BATCH_MAX], pending.waiting[BATCH_MAX:]
            batch = [item for item in batch if not item.answer.done()]
            if not batch:
                continue
            try:
                answers = await self._send(
                    pending.scope, [item.request for item in batch], f"admit-{uuid.uuid4()}"
                )
            except Exception as err:
                for item in batch:
                    if not item.answer.done():
                        item.answer.set_exception(err)
                continue
            by_request = {answer.request_id: answer for answer in answers}
            for item in batch:
                if item.answer.done():
                    continue
                found = by_request.get(item.request.request_id)
                if found is None:
                    item.answer.set_exception(
                        RuntimeError("the coordinator left a start unanswered")
                    )
                else:
                    item.answer.set_result(found)
        if self._scopes.get(pending.scope.id) is pending and not pending.waiting:
            del self._scopes[pending.scope.id]
