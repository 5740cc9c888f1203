"""Optional bearer API keys (API_KEYS / API_KEYS_FILE): the one rule, used by every route that
needs a key and by the finished-status fast path alike."""

from __future__ import annotations

import hmac
from typing import Annotated

import structlog
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

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
