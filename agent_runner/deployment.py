"""Joining the deployment: the one record of its bound (scope kind, N, queue size) that every
replica reads, in Temporal (the settings workflow's memo, :mod:`workflows.settings`).

The first replica to start seeds it from its environment; every replica then reads it back and
follows it. A replica whose ``AGENT_SCOPE`` differs refuses to start (its runs would go to
scopes the deployment does not have); one whose ``AGENT_SLOTS`` or ``AGENT_QUEUE_MAX`` differs
logs ``deployment_settings_differ`` and follows the record: changing N is an operation
(``PUT /agents/limits``, ``agent-runner limits set``), not an environment variable.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from datetime import datetime, timedelta

import structlog
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from agent_runner.contract import (
    CHANGE_EXPIRED,
    CHANGE_SETTINGS,
    LIMITS_CHANGED,
    SCOPE_WORKFLOW,
    SETTINGS_FRESH,
    SETTINGS_MEMO,
    SETTINGS_WORKFLOW,
    STALE_CHANGE,
    DeploymentSettings,
    ScopeLimits,
    ScopeOverride,
    SettingsChange,
)
from agent_runner.ids import Scope, settings_id
from agent_runner.runs.errors import update_wait
from agent_runner.settings import Settings
from agent_runner.validation import InvalidRunInputError, parse_as

logger = structlog.stdlib.get_logger(__name__)
# A change of the limits signals at most this many open coordinators, this many at a time.
COORDINATORS_TOLD = 5000
TELL_AT_ONCE = 20


class DeploymentMismatchError(RuntimeError):
    """This replica's environment contradicts the deployment in a way it cannot follow."""


async def read_deployment(
    client: Client, base: str, timeout: timedelta | None = None
) -> tuple[DeploymentSettings | None, bool]:
    """The deployment's record (None: none yet), and whether its workflow is open;
    ``timeout``: the call's RPC timeout (a paused server holds a call without one)."""
    try:
        handle = client.get_workflow_handle(settings_id(base))
        description = await handle.describe(rpc_timeout=timeout)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return None, False
        raise
    memo = await description.memo()
    if SETTINGS_MEMO not in memo:
        return None, description.status == WorkflowExecutionStatus.RUNNING
    record: DeploymentSettings = parse_as(DeploymentSettings, memo[SETTINGS_MEMO], "settings")
    return record, description.status == WorkflowExecutionStatus.RUNNING


async def join_deployment(client: Client, settings: Settings, *, role: str) -> DeploymentSettings:
    """Seed the record if there is none (or restart its workflow from the last record), then
    return the record every replica follows."""
    base = settings.workflow_id
    record, running = await read_deployment(client, base)
    if not running:
        seed = record or DeploymentSettings(
            scope_kind=settings.agent_scope,
            limits=settings.seeded_limits,
            slots_high_water=settings.agent_slots,
            changed_by=f"seeded by the environment of {role}",
        )
        await client.start_workflow(
            SETTINGS_WORKFLOW,
            seed,
            id=settings_id(base),
            task_queue=settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            memo={SETTINGS_MEMO: seed},
            static_summary="The deployment's bound: scope kind, N, queue size",
        )
        record, _ = await read_deployment(client, base)
    assert record is not None
    if record.scope_kind != settings.agent_scope:
        raise DeploymentMismatchError(
            f"AGENT_SCOPE={settings.agent_scope.value}, but the deployment {base!r} runs "
            f"{record.scope_kind.value} scopes: start this replica with "
            f"AGENT_SCOPE={record.scope_kind.value} (changing the scope kind means draining "
            "every run first: see docs/operations.md)"
        )
    wanted = settings.seeded_limits
    if record.limits != wanted:
        logger.warning(
            "deployment_settings_differ",
            message=(
                "This replica's environment differs from the deployment's record, which it "
                "follows; the environment only seeds the first value"
            ),
            deployment_slots=record.limits.slots,
            deployment_queue_max=record.limits.queue_max,
            environment_slots=wanted.slots,
            environment_queue_max=wanted.queue_max,
            deployment_limits=asdict(record.limits),
            environment_limits=asdict(wanted),
        )
    return record


class StaleChangeError(InvalidRunInputError):
    """A change made from a read of the record that another change has overtaken."""


# The API makes a change within this many RPC budgets (TEMPORAL_RPC_TIMEOUT_SECONDS) of taking it
# up, or never (see api.routes.limits._changed): the deadline it gives change_limits.
CHANGE_WITHIN = 4


class ChangeExpiredError(RuntimeError):
    """A change that reached the record after its ``not_after``: nothing changed."""


async def change_limits(
    client: Client,
    settings: Settings,
    limits: ScopeLimits,
    *,
    changed_by: str,
    scope: Scope | None = None,
    override: ScopeOverride | None = None,
    based_on: int | None = None,
    not_after: datetime | None = None,
    wait: float | None = None,
) -> DeploymentSettings:
    """Change the deployment's limits, or (``scope`` given) that scope's own (``override``;
    None: it follows the deployment's again): an update of the record, in its history with
    ``changed_by``; ``based_on``: the record's version it was made from
    (:class:`StaleChangeError` if another change came first); ``not_after``: when it is made by
    at the latest (:class:`ChangeExpiredError` after); ``wait``: how long the update's answer
    is waited for at most (see :func:`update_wait`; None: no bound; the telling of the
    coordinators after is not cut short: the change is made). Returns the record once every
    coordinator follows it (a second later). A lower N lets the agents at work finish and
    grants nothing until fewer than N work."""
    base = settings.workflow_id
    change = SettingsChange(
        limits=limits,
        changed_by=changed_by,
        scope=scope.label if scope is not None else None,
        override=override,
        based_on=based_on,
        not_after=not_after,
    )
    handle = client.get_workflow_handle(settings_id(base))
    try:
        async with update_wait(wait):
            try:
                record: DeploymentSettings = await handle.execute_update(
                    CHANGE_SETTINGS.name, change, result_type=CHANGE_SETTINGS.result_type
                )
            except RPCError as err:
                if err.status != RPCStatusCode.NOT_FOUND:
                    raise
                # Its workflow was ended from outside: start it again from its last record.
                await join_deployment(client, settings, role=f"a change by {changed_by}")
                record = await handle.execute_update(
                    CHANGE_SETTINGS.name, change, result_type=CHANGE_SETTINGS.result_type
                )
    except WorkflowUpdateFailedError as err:
        # The record's own check refused it (the API checks the rest before), or it was made
        # from a read another change overtook (``based_on``).
        message = str(err.cause or err)
        if STALE_CHANGE in message:
            raise StaleChangeError(message) from None
        if CHANGE_EXPIRED in message:
            raise ChangeExpiredError(message) from None
        raise InvalidRunInputError(message) from None
    told = await _tell_coordinators(client, settings, scope)
    # A coordinator not told (none was open, or visibility had not listed it yet) reads the
    # record again before a decision once its read is this old: answer once every one follows.
    await asyncio.sleep(SETTINGS_FRESH.total_seconds() + 0.1)
    logger.info(
        "limits_changed",
        **asdict(record.limits),
        scope=change.scope,
        scope_limits=asdict(record.scopes[change.scope]) if change.scope in record.scopes else None,
        version=record.version,
        changed_by=changed_by,
        coordinators_told=told,
    )
    return record


async def _tell_coordinators(client: Client, settings: Settings, scope: Scope | None) -> int:
    """Signal LIMITS_CHANGED to the scope's coordinator, or to every open one of the
    deployment (at most COORDINATORS_TOLD, TELL_AT_ONCE at a time), so a raised N or a resume
    grants at once; how many were told."""
    if scope is not None:
        ids = [scope.id]
    else:
        query = (
            f"WorkflowType = '{SCOPE_WORKFLOW}' AND ExecutionStatus = 'Running' AND "
            f"WorkflowId STARTS_WITH '{settings.workflow_id}'"
        )
        ids = []
        try:
            async for execution in client.list_workflows(query, limit=COORDINATORS_TOLD):
                ids.append(execution.id)
        except RPCError as err:
            logger.warning("coordinators_not_told", error=err.message)
    gate = asyncio.Semaphore(TELL_AT_ONCE)

    async def tell(workflow_id: str) -> int:
        async with gate:
            try:
                await client.get_workflow_handle(workflow_id).signal(LIMITS_CHANGED)
            except RPCError:
                return 0  # closed meanwhile: its successor reads the record when it starts
            return 1

    return sum(await asyncio.gather(*(tell(workflow_id) for workflow_id in ids)))
