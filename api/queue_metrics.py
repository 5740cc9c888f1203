"""Gauges of the deployment's concurrency for Prometheus: busy slots and runs waiting, summed
over every scope (a label per user would be unbounded), read from the coordinators' search
attributes in Temporal visibility when /metrics is scraped (at most every few seconds)."""

from __future__ import annotations

import time
from dataclasses import replace

import structlog
from temporalio.service import RPCError

from agent_runner import search_attributes
from agent_runner.contract import SCOPE_WORKFLOW, ScopeOverride
from agent_runner.deployment import read_deployment
from agent_runner.runs import Runs
from api.metrics import ApiMetrics

logger = structlog.stdlib.get_logger(__name__)
# Visibility is read at most this often, however often /metrics is scraped.
REFRESH_SECONDS = 5.0
# Coordinators read at most per refresh (the gauges are sums; a bound keeps a scrape cheap).
SCOPES_READ = 5000


class QueueGauges:
    def __init__(self, metrics: ApiMetrics) -> None:
        self._metrics = metrics
        self._read_at = float("-inf")

    async def refresh(self, runs: Runs) -> None:
        if time.monotonic() - self._read_at < REFRESH_SECONDS:
            return
        self._read_at = time.monotonic()
        target = runs.target
        try:
            # N as the deployment's record says now (another replica may have changed it).
            deployment, _ = await read_deployment(
                runs.client, target.workflow_id, target.rpc_timeout
            )
        except RPCError as err:
            logger.warning("queue_gauges_unavailable", error=err.message)
            return
        query = (
            f"WorkflowType = '{SCOPE_WORKFLOW}' AND ExecutionStatus = 'Running' AND "
            f"WorkflowId STARTS_WITH '{target.workflow_id}'"
        )
        slots = waiting = queues = 0
        try:
            async for execution in runs.client.list_workflows(
                query, limit=SCOPES_READ, rpc_timeout=target.rpc_timeout
            ):
                attributes = execution.typed_search_attributes
                depth = attributes.get(search_attributes.QUEUE_DEPTH) or 0
                slots += attributes.get(search_attributes.SLOTS_BUSY) or 0
                waiting += depth
                queues += 1 if depth else 0
        except RPCError as err:
            logger.warning("queue_gauges_unavailable", error=err.message)
            return
        kind = target.scope_kind.value
        self._metrics.slots_in_use.labels(kind).set(slots)
        if deployment is not None:
            self._metrics.slots_total.labels(kind).set(deployment.limits.slots)
            self._metrics.limits_version.set(deployment.version)
            own = deployment.scopes.values()
            self._metrics.scopes_paused.set(sum(1 for scope in own if scope.paused))
            self._metrics.scopes_with_own_limits.set(
                sum(1 for scope in own if replace(scope, paused=False) != ScopeOverride())
            )
        self._metrics.runs_waiting.labels(kind).set(waiting)
        self._metrics.queues_not_empty.labels(kind).set(queues)
