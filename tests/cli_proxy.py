"""A real HTTP proxy in front of a real API process, for what the API cannot be made to do on
demand: look like an older API without the events route, or drop an events stream half way.
Everything else passes through unchanged; the proxy records what it forwarded."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from devtools.processes import free_port

# An event ends with a blank line; servers end lines with \n or \r\n.
EVENT_END = re.compile(rb"\r?\n\r?\n")
HOP_BY_HOP = {"host", "connection", "content-length", "transfer-encoding", "keep-alive"}


@dataclass(frozen=True)
class Forwarded:
    method: str
    path: str
    query: str
    last_event_id: str | None
    status: int


class StreamDropped(Exception):
    """Raised inside a streamed body: the server closes the connection mid-stream."""


class Proxy:
    def __init__(
        self, upstream: str, *, hide_events: bool = False, drop_stream_after: int | None = None
    ) -> None:
        self.upstream = upstream
        self.hide_events = hide_events
        # Cut the first events stream after this many events (later ones pass whole).
        self.drop_stream_after = drop_stream_after
        self.forwarded: list[Forwarded] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Longer than the 15 s between an events stream's keepalives.
        self._client = httpx.AsyncClient(base_url=upstream, timeout=60.0)
        app = Starlette(
            routes=[Route("/{path:path}", self._handle, methods=["GET", "POST", "HEAD"])]
        )
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="critical")
        )
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Proxy:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            assert not self._task.done(), "the proxy did not start"
            await asyncio.sleep(0.05)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task
        await self._client.aclose()

    def requests_to(self, suffix: str) -> list[Forwarded]:
        return [seen for seen in self.forwarded if seen.path.endswith(suffix)]

    async def _handle(self, request: Request) -> Response:
        path = request.url.path
        is_events = path.endswith("/events")
        last_event_id = request.headers.get("last-event-id")
        if is_events and self.hide_events:
            self._record(request, last_event_id, 404)
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        upstream = self._client.build_request(
            request.method,
            path,
            params=request.query_params,
            headers={k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP},
            content=await request.body(),
        )
        response = await self._client.send(upstream, stream=True)
        self._record(request, last_event_id, response.status_code)
        body = response.aiter_raw()
        if is_events and response.status_code == 200 and self.drop_stream_after is not None:
            body = self._cut(body, self.drop_stream_after)
            self.drop_stream_after = None
        return StreamingResponse(
            self._closing(body, response),
            status_code=response.status_code,
            headers={k: v for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP},
        )

    def _record(self, request: Request, last_event_id: str | None, status: int) -> None:
        self.forwarded.append(
            Forwarded(request.method, request.url.path, request.url.query, last_event_id, status)
        )

    @staticmethod
    async def _cut(body: AsyncIterator[bytes], events: int) -> AsyncIterator[bytes]:
        """Pass ``events`` whole events (each ends with a blank line), then fail mid-stream."""
        buffer = b""
        async for chunk in body:
            buffer += chunk
            while (end := EVENT_END.search(buffer)) is not None:
                event, buffer = buffer[: end.end()], buffer[end.end() :]
                yield event
                if b"data:" in event:  # not a comment, not the opening `retry:`
                    events -= 1
                if events == 0:
                    raise StreamDropped

    @staticmethod
    async def _closing(
        body: AsyncIterator[bytes], response: httpx.Response
    ) -> AsyncIterator[bytes]:
        try:
            async for chunk in body:
                yield chunk
        finally:
            await response.aclose()
