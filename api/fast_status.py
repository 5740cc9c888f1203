"""A fast path for the hottest read: the status of a run this process already holds rendered,
a finished run's (it never changes) or an open run's that a watcher of this process follows
(:mod:`api.watchers`: current to within one history long poll).

Answering those needs no routing and no dependency injection. Measured with wrk this roughly
doubles what one API process serves (see docs/PERFORMANCE.md).

It answers only requests the route would answer from that same cache or watcher, and repeats
none of the route's rules:

- the query must be empty: ``wait`` is the route's to validate, so a request with any query
  string (valid or not) goes to the route;
- with API keys set, the key is checked by the route's own functions (FastAPI's
  :data:`api.auth.bearer` and :func:`api.auth.check_credentials`); a refused request goes to
  the route, which answers (and logs) the refusal.

Everything else, including any request the fast path is not sure of, goes through FastAPI.
"""

from __future__ import annotations

from types import SimpleNamespace

from fastapi import HTTPException
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from api.auth import bearer, check_credentials
from api.deps import AppState

PREFIX = "/agents/status/"
# What the metrics middleware labels these requests with, as if routed.
ROUTE = SimpleNamespace(path="/agents/status/{run_id}")


class StatusFastPath:
    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await self._cached(scope) if scope["type"] == "http" else None
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

    async def _cached(self, scope: Scope) -> bytes | None:
        path: str = scope["path"]
        if scope["method"] != "GET" or scope["query_string"] or not path.startswith(PREFIX):
            return None
        run_id = path[len(PREFIX) :]
        if not run_id or "/" in run_id:
            return None
        body = self.state.finished_runs.get(run_id)
        if body is None and (watch := self.state.watchers.peek(run_id)) is not None:
            latest = watch.latest()
            # A final status goes through the route once, which caches and counts it.
            if latest is not None and not latest.event.status.is_final:
                body = latest.body
        if body is None or not await self._authorized(scope):
            return None
        return body

    async def _authorized(self, scope: Scope) -> bool:
        if not self.state.api_keys:
            return True
        try:
            check_credentials(await bearer(HTTPConnection(scope)), self.state.api_keys)
        except HTTPException:
            return False
        return True
