"""A request body size limit (API_MAX_BODY_BYTES)."""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import status
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Before a 413, the rest of the body is read and dropped, up to this much in all and for this
# long. A client that sends its whole body before reading (urllib, http.client, most clients
# without Expect: 100-continue) would otherwise find the connection reset by the close that
# follows the 413, and never read it: the kernel resets a socket closed with unread data.
DRAIN_MAX_BYTES = 16 * 1024 * 1024
DRAIN_SECONDS = 10.0


class BodySizeLimit:
    """Refuse bodies over ``max_bytes`` with 413, by Content-Length or while streaming, in a way
    every client can read: the rest of the body is drained (bounded), then the connection is
    closed. A client that sent ``Expect: 100-continue`` gets the 413 before sending anything.

    FastAPI's own ``max_body_size`` is not a substitute: for a declared Content-Length over the
    limit Starlette answers in plain text ("Content Too Large"), and every error body of this
    API is JSON with a ``detail``.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        # Asked first: answering before any receive() means uvicorn never sends 100 Continue.
        asked_first = headers.get(b"expect", b"").lower() == b"100-continue"
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            if not asked_first and declared.isdigit() and int(declared) <= DRAIN_MAX_BYTES:
                await _drain(receive, 0)
            await self._too_large(scope, receive, send)
            return
        received = 0
        refused = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Answer now; to the app the client has gone, and what it sends is dropped.
                    refused = True
                    if message.get("more_body", False):
                        await _drain(receive, received)
                    await self._too_large(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def send_unless_refused(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, limited_receive, send_unless_refused)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(
            {"detail": f"Request body too large: at most {self.max_bytes} bytes"},
            status.HTTP_413_CONTENT_TOO_LARGE,
            # What is left of the body, if anything, is not read: the connection cannot serve
            # another request.
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


async def _drain(receive: Receive, received: int) -> None:
    """Read and drop the rest of a body, ``received`` bytes of which were read already, up to
    :data:`DRAIN_MAX_BYTES` in all and for at most :data:`DRAIN_SECONDS`."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DRAIN_SECONDS):
            while received <= DRAIN_MAX_BYTES:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client has gone
                received += len(message.get("body", b""))
                if not message.get("more_body", False):
                    return
