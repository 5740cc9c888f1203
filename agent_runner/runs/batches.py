"""Per-scope batching of calls to a scope's coordinator: one call at a time per scope from this
process, carrying every item that arrived meanwhile, each item answered from the call's
answers by its key. Serves the starts (:mod:`agent_runner.runs.admission`) and the record
reads (:mod:`agent_runner.runs.reads`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from agent_runner.ids import Scope

I = TypeVar("I")  # noqa: E741 (an item)
A = TypeVar("A")  # an answer


@dataclass
class _Waiting(Generic[I, A]):
    item: I
    answer: asyncio.Future[A | None]


@dataclass
class _Scope(Generic[I, A]):
    scope: Scope
    waiting: list[_Waiting[I, A]] = field(default_factory=list)
    sender: asyncio.Task[None] | None = None


class ScopeBatches(Generic[I, A]):
    """``send(scope, items)`` makes the call for at most ``most`` items; ``key(item)`` and
    ``answered(answer)`` match each answer to its item (None for an item left unanswered)."""

    def __init__(
        self,
        send: Callable[[Scope, list[I]], Awaitable[list[A]]],
        key: Callable[[I], str],
        answered: Callable[[A], str],
        most: int,
    ) -> None:
        self._send = send
        self._key = key
        self._answered = answered
        self._most = most
        self._scopes: dict[str, _Scope[I, A]] = {}

    async def ask(self, scope: Scope, item: I) -> A | None:
        """The answer to ``item`` (None: the call left it unanswered); the call's error if it
        failed."""
        pending = self._scopes.setdefault(scope.id, _Scope(scope))
        answer: asyncio.Future[A | None] = asyncio.get_running_loop().create_future()
        pending.waiting.append(_Waiting(item, answer))
        if pending.sender is None or pending.sender.done():
            pending.sender = asyncio.create_task(self._drain(pending))
        return await answer

    async def _drain(self, pending: _Scope[I, A]) -> None:
        while pending.waiting:
            batch, pending.waiting = pending.waiting[: self._most], pending.waiting[self._most :]
            batch = [waiting for waiting in batch if not waiting.answer.done()]
            if not batch:
                continue
            try:
                answers = await self._send(pending.scope, [waiting.item for waiting in batch])
            except asyncio.CancelledError:
                for waiting in batch:  # their callers are not left waiting on a sender gone
                    waiting.answer.cancel()
                raise
            except Exception as err:
                for waiting in batch:
                    if not waiting.answer.done():
                        waiting.answer.set_exception(err)
                continue
            by_key = {self._answered(answer): answer for answer in answers}
            for waiting in batch:
                if not waiting.answer.done():
                    waiting.answer.set_result(by_key.get(self._key(waiting.item)))
        if self._scopes.get(pending.scope.id) is pending and not pending.waiting:
            del self._scopes[pending.scope.id]
