"""Assembles the FastAPI application: settings, logging, the Temporal client, routers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import structlog
from fastapi import Depends, FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent_runner.agent_registry import AgentRegistry
from agent_runner.connection import api_retry_config, create_runtime
from agent_runner.connector import Connector
from agent_runner.logs import configure_logging, redact_access_log_queries
from agent_runner.settings import Settings, get_settings
from agent_runner.tracing import tracing_interceptors
from api.agent_docs import describe_agents
from api.auth import KeyBeforeBody, require_api_key
from api.body_limit import BodySizeLimit
from api.deps import AppState
from api.errors import UNAVAILABLE_DETAIL, install_error_handlers, retry_later
from api.metrics import MetricsMiddleware
from api.routes import agents as agent_routes
from api.routes import docs, events, health, limits, runs, start
from api.routes import status as status_routes

logger = structlog.stdlib.get_logger(__name__)
# How long the API waits at start, when connected, to read the deployment's record before it
# serves (503 meanwhile otherwise).
JOIN_WAIT_SECONDS = 3.0


class ClearLogContext:
    """Each request starts with no run bound to its log lines."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        structlog.contextvars.clear_contextvars()
        await self.app(scope, receive, send)


class AnswerWhenCutShort:
    """A request the server cancels as it stops (past uvicorn's graceful shutdown) is answered
    ``503`` with ``Retry-After`` if nothing was sent yet, not the ``500`` uvicorn sends for an
    exception: nothing the client sent is wrong, and another replica can answer (chaos seed
    37019: two status reads waiting on Temporal answered 500 as their API stopped). The
    cancellation then goes on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except asyncio.CancelledError:
            if not started:
                logger.warning("request_cut_short", path=scope.get("path"), reason="stopping")
                await retry_later(UNAVAILABLE_DETAIL)(scope, receive, send)
            raise


def create_app(settings: Settings | None = None, agents: AgentRegistry | None = None) -> FastAPI:
    """The app; ``agents`` default to every agent installed in this environment."""
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_format)
    state = AppState.from_settings(settings, agents)
    app = FastAPI(
        title="agent-runner",
        summary="Runs one insurance agent at a time, on Temporal.",
        version="0.1.0",
        lifespan=_lifespan(state),
        # Served by api/routes/docs.py instead, behind the API keys like /agents/*.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.agent_runner = state
    # The innermost: inside the metrics, the log context, the body limit and the key check.
    app.add_middleware(status_routes.StatusFastPath, state=state)
    if state.api_keys:
        app.add_middleware(KeyBeforeBody, keys=state.api_keys)
    app.add_middleware(ClearLogContext)
    app.add_middleware(BodySizeLimit, max_bytes=settings.api_max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    app.add_middleware(AnswerWhenCutShort)  # the outermost
    # With API keys set, /agents/* and the docs (and optionally /metrics) need one; health
    # stays open.
    protected = [Depends(require_api_key)] if state.api_keys else []
    routers = (
        start.router,
        status_routes.router,
        runs.router,
        events.router,
        agent_routes.router,
        limits.router,
    )
    for router in routers:
        app.include_router(router, dependencies=protected)
    app.include_router(docs.docs, dependencies=protected)
    app.include_router(health.probes)
    app.include_router(
        health.metrics_router, dependencies=protected if settings.metrics_require_api_key else []
    )
    install_error_handlers(app)
    describe_agents(app, state.agents)
    # uvicorn's access line shows a query's parameters only if the API declares them.
    redact_access_log_queries(declared_query_parameters(app))
    return app


def declared_query_parameters(app: FastAPI) -> set[str]:
    return {
        parameter["name"]
        for operations in app.openapi()["paths"].values()
        for operation in operations.values()
        for parameter in operation.get("parameters", [])
        if parameter["in"] == "query"
    }


def _lifespan(state: AppState) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    settings = state.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The API starts, and answers 503 naming the cause, while Temporal is unreachable.
        interceptors, flush_traces = tracing_interceptors(settings, "api")
        state.connector = Connector(
            settings,
            runtime=create_runtime(metric_buffer=state.temporal_requests.buffer),
            retry_config=api_retry_config(settings),
            interceptors=interceptors,
        )
        await state.connector.start()
        joining = asyncio.create_task(state.join())
        if state.connector.client is not None:
            # Connected: serve once the deployment's record is read (a moment), not before.
            await asyncio.wait({joining}, timeout=JOIN_WAIT_SECONDS)
        logger.info(
            "api_start",
            temporal_address=settings.temporal_address,
            namespace=settings.temporal_namespace,
            workflow_id=settings.workflow_id,
            task_queue=settings.task_queue,
        )
        draining = asyncio.create_task(state.temporal_requests.drain_every(1.0))
        yield
        draining.cancel()
        joining.cancel()
        await state.watchers.close()
        await state.connector.stop()
        flush_traces()

    return lifespan


app = create_app()
