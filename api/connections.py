"""Deadlines for the client's side of a request, in ``python -m api`` (uvicorn).

The rule: a request's headers must have arrived ``header_timeout`` seconds after the connection
opened (its first request) or after the request's first byte (a later request on a kept-alive
connection), and its body ``body_timeout`` seconds after its headers. A client that is slower
is disconnected, whatever it has sent: nothing, half a header, part of a body. Only the
client's sending is timed: an idle connection between two requests stays open for uvicorn's
keep-alive timeout, and a response (a long poll, an events stream) takes as long as it takes.

uvicorn itself times only the idle wait between requests (``timeout_keep_alive``). A connection
that never sends a byte, or a request that stalls half-way, would hold its file descriptor
until the client went away, so a few clients could exhaust the process's descriptors. Its
``limit_concurrency`` (``API_MAX_CONNECTIONS``) bounds the connections it serves; these
deadlines bound how long the ones over that bound, which it answers only once their headers
are in, hold a descriptor.

The deadlines live in a subclass of uvicorn's httptools protocol (the one uvicorn picks when
httptools is installed, as ``uvicorn[standard]`` does), driven by its parser's callbacks.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class RequestDeadlines(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol, closing a connection whose request arrives too slowly."""

    header_timeout: float = 10.0
    body_timeout: float = 10.0
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._expect_within(self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # The first request's deadline runs from the connection's opening.
        if self._deadline is None:
            self._expect_within(self.header_timeout)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._expect_within(self.body_timeout)

    def on_message_complete(self) -> None:
        self._cancel_deadline()
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        # The connection is another protocol's from now on.
        self._cancel_deadline()
        super().handle_websocket_upgrade()

    def _expect_within(self, seconds: float) -> None:
        self._cancel_deadline()
        self._deadline = self.loop.call_later(seconds, self._too_slow)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def request_deadlines(*, header_timeout: float, body_timeout: float) -> type[RequestDeadlines]:
    """The protocol class to give uvicorn (``http=``), with these deadlines in seconds."""

    class Configured(RequestDeadlines):
        pass

    Configured.header_timeout = header_timeout
    Configured.body_timeout = body_timeout
    return Configured
