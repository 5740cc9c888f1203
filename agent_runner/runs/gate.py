"""How many starts one API process has in flight to the coordinators at once, adapted to what
the server and the workers answer in time (additive increase, multiplicative decrease).

Without it, a burst of starts on new scopes collapsed (issue 20): each start on a new scope
costs the server and the workers four workflow tasks and three activity tasks; with more in
flight than they could answer within the API's budget, nearly every start ran out of it and
answered ``503``, and each refused start had cost as much as an accepted one (its coordinator
started, read, refused, closed). 2,000 users started 20 at a time on this 2-core machine with
one core busy: 150 accepted in 9 minutes and 2,168 refusals.

Now a start beyond the limit waits here, in this process, where waiting costs nothing; one
that waits a whole budget is refused (``503`` with ``Retry-After``) without having asked
Temporal anything. The limit halves when a start runs out of its budget (once per such
episode: the starts in flight with it do not halve it again), and grows with each start
answered within half the budget: by one below the initial limit (so it comes back within a few
answers once an outage that halved it is over), by one per limit's worth above it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass


class StartsBusyError(Exception):
    """This process had as many starts in flight as the server answers in time, for a whole
    budget: the start was refused before it asked Temporal anything."""

    def __init__(self) -> None:
        super().__init__("Too many starts at once, please retry later")


@dataclass
class Ticket:
    """One start let through: the limit's episode when it went (see :meth:`StartGate.overran`)."""

    episode: int


class StartGate:
    def __init__(self, initial: int = 8, least: int = 1, most: int = 256) -> None:
        self.initial = float(initial)
        self.limit = float(initial)
        self.least = least
        self.most = most
        self.in_flight = 0
        self._episode = 0
        self._waiting: deque[asyncio.Future[None]] = deque()

    @contextlib.asynccontextmanager
    async def through(self, wait: float) -> AsyncIterator[Ticket]:
        """Hold one place while the block runs; wait at most ``wait`` seconds for one, else
        raise :class:`StartsBusyError`."""
        if self.in_flight >= int(self.limit) or self._waiting:
            place = asyncio.get_running_loop().create_future()
            self._waiting.append(place)
            try:
                await asyncio.wait_for(asyncio.shield(place), wait)
            except TimeoutError:
                self._give_up(place)
                raise StartsBusyError from None
            except asyncio.CancelledError:
                self._give_up(place)
                raise
        else:
            self.in_flight += 1
        try:
            yield Ticket(self._episode)
        finally:
            self._free()

    def _give_up(self, place: asyncio.Future[None]) -> None:
        """A waiter that leaves: its place back if it was handed one as it left, else its turn."""
        if place.done():
            self._free()
        elif place in self._waiting:
            self._waiting.remove(place)

    def _free(self) -> None:
        """A place ends: to the next waiter, if the limit has room for it."""
        self.in_flight -= 1
        self._admit_waiting()

    def answered_in_time(self) -> None:
        """A start answered within half its budget: below the initial limit one more place
        (back to it quickly once an outage that halved it is over), above it one more place per
        limit's worth."""
        step = 1.0 if self.limit < self.initial else 1.0 / self.limit
        self.limit = min(float(self.most), self.limit + step)
        self._admit_waiting()

    def overran(self, ticket: Ticket) -> None:
        """A start ran out of its budget: half the places, once per episode."""
        if ticket.episode != self._episode:
            return
        self._episode += 1
        self.limit = max(float(self.least), self.limit / 2)

    def _admit_waiting(self) -> None:
        while self._waiting and self.in_flight < int(self.limit):
            place = self._waiting.popleft()
            if not place.done():
                self.in_flight += 1
                place.set_result(None)
