"""Who polls a task queue: whether a run can progress at all."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from agent_runner.ids import RunTarget, agent_task_queue

# A worker with nothing to do renews its long poll about once a minute.
RECENT = timedelta(seconds=70)


async def pollers(
    client: Client, target: RunTarget, task_queue: str, kind: TaskQueueType.ValueType
) -> int:
    """How many workers polled ``task_queue`` for ``kind`` tasks within :data:`RECENT`."""
    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace, task_queue=TaskQueue(name=task_queue), task_queue_type=kind
        ),
        timeout=target.rpc_timeout,
    )
    now = datetime.now(UTC)
    return sum(
        1
        for poller in response.pollers
        if not poller.HasField("last_access_time")
        or now - poller.last_access_time.ToDatetime(tzinfo=UTC) <= RECENT
    )


async def agent_pollers(client: Client, target: RunTarget, agent_type: str) -> int:
    """How many workers that have this agent are polling its task queue."""
    return await pollers(
        client,
        target,
        agent_task_queue(target.task_queue, agent_type),
        TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
    )
