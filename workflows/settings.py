"""AgentRunnerSettingsWorkflow: the deployment's bound, written once where every replica reads
it (its memo, one ``describe`` away): the scope kind, N and the queue's size.

Every API and worker seeds it at start with what its environment says (``seed``: only the first
seed counts) and reads back what the deployment runs; a replica whose scope kind differs refuses
to start, one whose N differs says so and follows the record. Changing the limits is an update
(the API's and the CLI's ``limits`` commands), logged with who made it; coordinators read the
record again within a second of any decision (see :mod:`workflows.scope`).
"""

from __future__ import annotations

from dataclasses import asdict, replace
from datetime import UTC, datetime

from temporalio import workflow
from temporalio.common import RawValue

with workflow.unsafe.imports_passed_through():
    from agent_runner.contract import (
        CHANGE_EXPIRED,
        CHANGE_SETTINGS,
        MAX_SCOPE_OVERRIDES,
        SETTINGS_MEMO,
        SETTINGS_WORKFLOW,
        STALE_CHANGE,
        DeploymentSettings,
        ScopeOverride,
        SettingsChange,
    )
    from agent_runner.ids import MAX_SCOPE_NAME, scope_named, settings_id
    from agent_runner.validation import InvalidRunInputError, check_limits, parse_as


@workflow.defn(name=SETTINGS_WORKFLOW, failure_exception_types=[InvalidRunInputError, TypeError])
class AgentRunnerSettingsWorkflow:
    def __init__(self) -> None:
        self._record: DeploymentSettings | None = None

    @workflow.run
    async def run(self, record: RawValue) -> None:
        """Started with the record (the first replica's seed, or the record it carried across
        continue-as-new); it publishes the record as its memo and holds it for ever."""
        workflow_id = workflow.info().workflow_id
        if workflow_id != settings_id(workflow_id.split(":", 1)[0]):
            raise InvalidRunInputError(
                f"{workflow_id!r} is not a settings record's id (<base>:settings)"
            )
        try:
            raw = workflow.payload_converter().from_payload(record.payload)
        except Exception:
            raise InvalidRunInputError("the settings record does not decode") from None
        self._record = parse_as(DeploymentSettings, raw, "settings")
        check_limits(self._record.limits)
        workflow.upsert_memo({SETTINGS_MEMO: self._record})
        await workflow.wait_condition(
            lambda: (
                workflow.info().is_continue_as_new_suggested() and workflow.all_handlers_finished()
            )
        )
        workflow.continue_as_new(self._record, memo={SETTINGS_MEMO: self._record})

    @workflow.update(name=CHANGE_SETTINGS.name)
    async def change_settings(self, change: SettingsChange) -> DeploymentSettings:
        """Change the limits; the record as it is now. A change that reaches an execution
        before its first task read its input waits for that record, then changes it: it was
        made on a record that could not yet be read, and the record then overwrote it (found
        by tests/test_admission.py under load: a PUT right after the first replica started
        answered 200 with the change, and every coordinator then read the seed)."""
        await workflow.wait_condition(lambda: self._record is not None)
        assert self._record is not None
        if change.based_on is not None and change.based_on != self._record.version:
            # Made from a read another change has overtaken (found by a new-user trial: three
            # PUTs at once each answered 200, and the record kept one of them).
            raise InvalidRunInputError(
                f"{STALE_CHANGE} (version {change.based_on}, now {self._record.version})"
            )
        now = workflow.now()
        if change.scope is not None:
            scopes = dict(self._record.scopes)
            override = change.override
            if override is None or override.is_empty():
                scopes.pop(change.scope, None)
            else:
                scopes[change.scope] = override
            self._record = replace(
                self._record,
                scopes=scopes,
                slots_high_water=max(
                    self._record.slots_high_water, (override.slots if override else None) or 0
                ),
                version=self._record.version + 1,
                changed_by=change.changed_by,
                changed_at=now,
            )
        elif not change.seed:
            self._record = replace(
                self._record,
                limits=change.limits,
                slots_high_water=max(self._record.slots_high_water, change.limits.slots),
                version=self._record.version + 1,
                changed_by=change.changed_by,
                changed_at=now,
            )
        if change.scope is not None or not change.seed:
            workflow.logger.info(
                "settings_changed",
                extra={
                    "limits": asdict(self._record.limits),
                    "scope": change.scope,
                    "scope_limits": asdict(change.override) if change.override else None,
                    "changed_by": change.changed_by,
                    "version": self._record.version,
                },
            )
        workflow.upsert_memo({SETTINGS_MEMO: self._record})
        return self._record

    @change_settings.validator
    def _check(self, change: SettingsChange) -> None:
        if change.not_after is not None:
            # A validator runs on first run only (a refused update leaves nothing in the
            # history), so the real clock is safe here, and is the one the caller's deadline
            # was set by: workflow.now() may be the time of the task before, after a worker
            # took the workflow over (see FRESH_TIMER_PATCH in workflows.scope).
            with workflow.unsafe.sandbox_unrestricted():
                late = datetime.now(UTC) > change.not_after
            if late:
                raise InvalidRunInputError(f"{CHANGE_EXPIRED} ({change.not_after.isoformat()})")
        check_limits(change.limits)
        if change.scope is None:
            return
        if not isinstance(change.scope, str) or not 0 < len(change.scope) <= MAX_SCOPE_NAME:
            raise InvalidRunInputError(f"a scope's name is 1 to {MAX_SCOPE_NAME} characters")
        if self._record is not None:
            base = workflow.info().workflow_id.split(":", 1)[0]
            kind = self._record.scope_kind
            if (named := scope_named(base, kind, change.scope)) is None or (
                named.label != change.scope
            ):
                # A name no scope of this deployment has could never be changed back through
                # the API (found by a new-user trial: "../../etc" was taken).
                raise InvalidRunInputError(
                    f"{change.scope!r} is not a scope of this deployment (scopes are {kind.value})"
                )
            own = {change.scope: change.override or ScopeOverride()}
            check_limits(replace(self._record, scopes=own).limits_for(change.scope))
            if len(set(self._record.scopes) | {change.scope}) > MAX_SCOPE_OVERRIDES:
                raise InvalidRunInputError(
                    f"at most {MAX_SCOPE_OVERRIDES} scopes may have limits of their own"
                )
