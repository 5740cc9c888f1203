"""Optional bearer API keys, and a request body size limit."""

from __future__ import annotations

import hmac
from typing import Annotated

import structlog
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

bearer = HTTPBearer(auto_error=False, description="One of the keys in API_KEYS / API_KEYS_FILE.")
logger = structlog.stdlib.get_logger(__name__)


def key_matches(candidate: str, keys: frozenset[str]) -> bool:
    """Compare against every key in constant time, so timing tells nothing about any key."""
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(candidate.encode(), key.encode())
    return matched


async def require_api_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    keys: frozenset[str] = request.app.state.agent_runner.api_keys
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "Missing API key: send Authorization: Bearer <key>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not key_matches(credentials.credentials, keys):
        # The key itself is never logged.
        logger.warning("api_key_rejected", path=request.url.path)
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Invalid API key")


class BodySizeLimit:
    """Refuse bodies over ``max_bytes`` with 413, by Content-Length or while streaming.

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
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
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
        )
        await response(scope, receive, send)
