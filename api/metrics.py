"""Prometheus metrics of the API: requests by route and status, latency, and run outcomes."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.runtime import MetricBuffer

_REQUEST_METRICS = {"temporal_request", "temporal_long_request"}
# Updates the SDK may hold between two drains (each call adds two: a count and a latency).
_BUFFERED_UPDATES = 100_000


class ApiMetrics:
    """One registry per app, so several apps in one process (tests) never collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "agent_runner_http_requests",
            "HTTP requests answered, by route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "agent_runner_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.runs_accepted = Counter(
            "agent_runner_runs_accepted", "Runs this API started.", registry=self.registry
        )
        self.runs_queued = Counter(
            "agent_runner_runs_queued",
            "Runs this API accepted into a queue (on_busy enqueue, every slot taken).",
            registry=self.registry,
        )
        self.runs_rejected_busy = Counter(
            "agent_runner_runs_rejected_busy",
            "Starts refused because a run was open (409).",
            registry=self.registry,
        )
        self.temporal_requests = Counter(
            "agent_runner_temporal_requests",
            "Calls this process made to Temporal, by operation, as the SDK counts them (a long "
            "poll of a run's history is one call per answer).",
            ["operation"],
            registry=self.registry,
        )
        self.watched_runs = Gauge(
            "agent_runner_watched_runs",
            "Runs this process follows (one watcher each, whatever the number of readers).",
            registry=self.registry,
        )
        self.slots_in_use = Gauge(
            "agent_runner_slots_in_use",
            "Slots holding an open run, over every scope (from Temporal visibility).",
            ["scope_kind"],
            registry=self.registry,
        )
        self.slots_total = Gauge(
            "agent_runner_slots_per_scope",
            "How many agents may work at once in one scope (N, from the deployment's record).",
            ["scope_kind"],
            registry=self.registry,
        )
        self.limits_version = Gauge(
            "agent_runner_limits_version",
            "The version of the deployment's limits record (each change adds one).",
            registry=self.registry,
        )
        self.scopes_paused = Gauge(
            "agent_runner_scopes_paused",
            "Scopes paused (POST /agents/scopes/{scope}/pause): they queue and start nothing.",
            registry=self.registry,
        )
        self.scopes_with_own_limits = Gauge(
            "agent_runner_scopes_with_own_limits",
            "Scopes with limits of their own (PUT /agents/limits/{scope}).",
            registry=self.registry,
        )
        self.runs_waiting = Gauge(
            "agent_runner_runs_waiting",
            "Runs waiting in queues, over every scope (from Temporal visibility).",
            ["scope_kind"],
            registry=self.registry,
        )
        self.queues_not_empty = Gauge(
            "agent_runner_queues_not_empty",
            "Scopes whose queue holds at least one waiting run.",
            ["scope_kind"],
            registry=self.registry,
        )
        self.stream_subscribers = Gauge(
            "agent_runner_stream_subscribers",
            "Open status streams (GET /agents/runs/{run_id}/events) of this process.",
            registry=self.registry,
        )
        self.start_limit = Gauge(
            "agent_runner_start_limit",
            "Starts this process lets be in flight to the coordinators at once, as adapted to "
            "what is answered within the budget (more wait in the process).",
            registry=self.registry,
        )
        self.starts_in_flight = Gauge(
            "agent_runner_starts_in_flight",
            "Starts of this process in flight to the coordinators now.",
            registry=self.registry,
        )
        self.starts_refused_busy = Counter(
            "agent_runner_starts_refused_busy",
            "Starts this process refused (503) after waiting a whole budget for a place in flight.",
            registry=self.registry,
        )
        self.runs_finished = Counter(
            "agent_runner_runs_finished",
            "Runs this API saw finished, by final state (each counted once per API process).",
            ["state"],
            registry=self.registry,
        )


class TemporalRequests:
    """The SDK's own count of this process's calls to Temporal (``temporal_request`` and
    ``temporal_long_request``), moved into :attr:`ApiMetrics.temporal_requests`."""

    def __init__(self, metrics: ApiMetrics) -> None:
        self.buffer = MetricBuffer(_BUFFERED_UPDATES)
        self._metrics = metrics

    async def drain_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            self.drain()

    def drain(self) -> None:
        for update in self.buffer.retrieve_updates():
            if update.metric.name in _REQUEST_METRICS:
                operation = str(update.attributes.get("operation", "unknown"))
                self._metrics.temporal_requests.labels(operation).inc(update.value)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            method = scope["method"]
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)
