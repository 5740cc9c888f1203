"""Optional bearer API keys (API_KEYS / API_KEYS_FILE)."""

from __future__ import annotations

import hmac
from typing import Annotated

import structlog
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

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
