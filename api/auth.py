"""Optional bearer API keys (API_KEYS / API_KEYS_FILE): the one rule, used by every route that
needs a key and by the status fast path alike (api/routes/status.py).

The key is checked before the body is read: FastAPI reads and parses a route's body before it
runs any dependency, so without :class:`KeyBeforeBody` a body that is not JSON would be
answered 422 to a client without a key, telling it how its body was wrong."""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

import structlog
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Reads the bearer credentials from Authorization, and declares the scheme in the OpenAPI doc.
bearer = HTTPBearer(auto_error=False, description="One of the keys in API_KEYS / API_KEYS_FILE.")
logger = structlog.stdlib.get_logger(__name__)


def key_matches(candidate: str, keys: frozenset[str]) -> bool:
    """Compare against every key in constant time, so timing tells nothing about any key."""
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(candidate.encode(), key.encode())
    return matched


def check_credentials(
    credentials: HTTPAuthorizationCredentials | None, keys: frozenset[str]
) -> None:
    """Pass, or raise the refusal: 401 without a bearer key, 403 with one not in ``keys``.
    ``credentials`` are what :data:`bearer` read from the request."""
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "Missing API key: send Authorization: Bearer <key>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not key_matches(credentials.credentials, keys):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Invalid API key")


async def require_api_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    try:
        check_credentials(credentials, request.app.state.agent_runner.api_keys)
    except HTTPException as refused:
        if refused.status_code == status.HTTP_403_FORBIDDEN:
            # The key itself is never logged.
            logger.warning("api_key_rejected", path=request.url.path)
        raise
    assert credentials is not None
    request.state.caller = key_id(credentials.credentials)


def key_id(key: str) -> str:
    """How logs and records name an API key without telling it: ``key-`` and 12 hex digits of
    its SHA-256 (``printf %s "$KEY" | sha256sum`` finds whose it is)."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def caller(request: Request) -> str:
    """Who sent the request: its API key's id, or its address when the API needs no key."""
    found: str | None = getattr(request.state, "caller", None)
    if found is not None:
        return found
    host = request.client.host if request.client else "unknown"
    return f"no API key (API_KEYS unset), from {host}"


class KeyBeforeBody:
    """ASGI middleware, with API keys set: a request without a valid key reads as one without a
    body. Its route's key dependency then refuses it (401 or 403, logged) as it refuses any
    other request, before anything in the body counts; routes that need no key (the probes,
    ``/metrics``) read no body. The refusal is the dependency's alone: this only keeps the body
    from the app.

    The body is still read and dropped (as far as the body size limit and the body deadline
    let it come), so that a client that sends its whole body before it reads can read the
    refusal; one that sent ``Expect: 100-continue`` is never asked for it.
    """

    def __init__(self, app: ASGIApp, keys: frozenset[str]) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope) or await key_valid(scope, self.keys):
            await self.app(scope, receive, send)
            return
        asked_first = (b"expect", b"100-continue") in (
            (name, value.lower()) for name, value in scope["headers"]
        )
        withheld = False

        async def without_body() -> Message:
            nonlocal withheld
            if not withheld:
                withheld = True
                message: Message = {"type": "http.request", "more_body": not asked_first}
                while message["type"] == "http.request" and message.get("more_body", False):
                    message = await receive()
                if message["type"] != "http.request":
                    return message  # the client has gone
                return {"type": "http.request", "body": b"", "more_body": False}
            while True:  # what the app awaits now is the client going away
                message = await receive()
                if message["type"] != "http.request":
                    return message

        await self.app(scope, without_body, send)


async def key_valid(scope: Scope, keys: frozenset[str]) -> bool:
    """Whether the request may pass: no keys are set, or it carries one of them."""
    if not keys:
        return True
    try:
        check_credentials(await bearer(HTTPConnection(scope)), keys)
    except HTTPException:
        return False
    return True


def _has_body(scope: Scope) -> bool:
    """Whether the request has a body at all (HTTP/1.1: a length or a transfer coding)."""
    return any(
        (name == b"content-length" and value.strip() != b"0") or name == b"transfer-encoding"
        for name, value in scope["headers"]
    )
