"""A fast path for the hottest read: the status of a finished run.

A finished run's status never changes and is already rendered in the cache, so answering it
needs no routing, no dependency injection and no validation. Measured with wrk this roughly
doubles what one API process serves for finished runs (see docs/PERFORMANCE.md). Everything
else, including any request the fast path is not sure of, goes through FastAPI as usual.
"""

from __future__ import annotations

from types import SimpleNamespace

from starlette.types import ASGIApp, Receive, Scope, Send

from api.auth import key_matches
from api.deps import AppState

PREFIX = "/agents/status/"
# What the metrics middleware labels these requests with, as if routed.
ROUTE = SimpleNamespace(path="/agents/status/{run_id}")


class FinishedStatusFastPath:
    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = self._cached(scope) if scope["type"] == "http" else None
        if body is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = ROUTE
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _cached(self, scope: Scope) -> bytes | None:
        path: str = scope["path"]
        if scope["method"] != "GET" or not path.startswith(PREFIX):
            return None
        run_id = path[len(PREFIX) :]
        if not run_id or "/" in run_id or not self._authorized(scope):
            return None
        return self.state.finished_runs.get(run_id)

    def _authorized(self, scope: Scope) -> bool:
        """With API keys set, only a request with a valid key takes the fast path; FastAPI
        answers the others (401/403) as usual."""
        if not self.state.api_keys:
            return True
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, key = value.decode("latin-1").partition(" ")
                return scheme.lower() == "bearer" and key_matches(key.strip(), self.state.api_keys)
        return False
