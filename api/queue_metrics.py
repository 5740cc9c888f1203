"""Gauges of the deployment's concurrency for Prometheus: slots in use and runs waiting, summed
over every scope (a label per user would be unbounded), read from Temporal visibility when
/metrics is scraped (at most every few seconds). How long runs waited is the workers'
``agent_runner_queue_wait_seconds`` histogram (WORKER_METRICS_ADDRESS)."""

from __future__ import annotations

import time

import structlog
from temporalio.client import Client
from temporalio.service import RPCError

from agent_runner import search_attributes
from agent_runner.locations import parse_workflow_id
from agent_runner.runs import RunTarget
from api.metrics import ApiMetrics

logger = structlog.stdlib.get_logger(__name__)
# Visibility is read at most this often, however often /metrics is scraped.
REFRESH_SECONDS = 5.0


class QueueGauges:
    def __init__(self, metrics: ApiMetrics) -> None:
        self._metrics = metrics
        self._read_at = float("-inf")

    async def refresh(self, client: Client, target: RunTarget) -> None:
        if time.monotonic() - self._read_at < REFRESH_SECONDS:
            return
        self._read_at = time.monotonic()
        query = f"WorkflowId STARTS_WITH '{target.workflow_id}' AND ExecutionStatus = 'Running'"
        slots = waiting = queues = 0
        try:
            async for execution in client.list_workflows(query, rpc_timeout=target.rpc_timeout):
                where = parse_workflow_id(target.workflow_id, execution.id)
                if where is None:
                    continue  # another deployment's id that shares our prefix
                if where[1] is not None:
                    slots += 1
                    continue
                depth = execution.typed_search_attributes.get(search_attributes.QUEUE_DEPTH)
                waiting += depth or 0
                queues += 1 if depth else 0
        except RPCError as err:
            logger.warning("queue_gauges_unavailable", error=err.message)
            return
        kind = target.scope_kind.value
        self._metrics.slots_in_use.labels(kind).set(slots)
        self._metrics.slots_total.labels(kind).set(target.slots)
        self._metrics.runs_waiting.labels(kind).set(waiting)
        self._metrics.queues_not_empty.labels(kind).set(queues)
