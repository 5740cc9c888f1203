"""The limits every replica follows, changed live: the deployment's (GET and PUT
/agents/limits: N, the queue's size and order), one scope's own (GET, PUT and DELETE
/agents/limits/{scope}), and a scope's pause (POST /agents/scopes/{scope}/pause and /resume).

One record in Temporal holds them all; a change is logged with the API key that made it, is
signalled to the coordinators it concerns, and is what every one of them follows when the
answer comes (within a second). Lowering N never stops an agent at work; a paused scope keeps
accepting and queueing runs and starts none until it is resumed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import structlog
from fastapi import HTTPException, Path, Request, status

from agent_runner.contract import DeploymentSettings, ScopeLimits, ScopeOverride
from agent_runner.deployment import (
    CHANGE_WITHIN,
    ChangeExpiredError,
    StaleChangeError,
    change_limits,
    read_deployment,
)
from agent_runner.ids import MAX_SCOPE_NAME, Scope
from agent_runner.runs import TemporalUnavailableError
from agent_runner.runs.errors import temporal_call
from api.auth import caller
from api.deps import AppState, StateDep
from api.routes.common import ERRORS, agents_router, named_scope
from api.schemas import (
    LimitsChangeRequest,
    LimitsResponse,
    ScopeLimitsChangeRequest,
    ScopeLimitsResponse,
    ScopeOwnLimits,
)

router = agents_router()
# A change overtaken by another (see _changed) is made again from a new read this often at most.
CHANGE_TRIES = 10
# The status logged for a change whose caller went away before it was made (nobody reads it).
CLIENT_GONE = 499
logger = structlog.stdlib.get_logger(__name__)
ScopePath = Annotated[
    str,
    Path(
        max_length=MAX_SCOPE_NAME,
        description="`global`, a user id or an agent type, as `AGENT_SCOPE` says.",
    ),
]
CHANGE_ERRORS: dict[int | str, dict[str, Any]] = {
    415: ERRORS[415],
    422: {"description": "A limit out of range, an unknown field, or a scope this deployment "
          "does not have"},
    503: ERRORS[503],
}  # fmt: skip


@router.get("/limits", response_model=LimitsResponse, responses={503: ERRORS[503]})
async def limits(state: StateDep) -> LimitsResponse:
    """The deployment's limits as every replica follows them now, and the scopes' own."""
    return _body(await _record(state))


@router.put("/limits", response_model=LimitsResponse, responses=CHANGE_ERRORS)
async def set_limits(
    change: LimitsChangeRequest, request: Request, state: StateDep
) -> LimitsResponse:
    """Change N (`slots`), the queue's size (`queue_max`) or its order (`aging_seconds`,
    `fair_shares`, `weights`: the whole map) for every scope of the deployment. Lowering N
    lets the agents at work finish and grants nothing until fewer than N work; raising it
    grants waiting runs at once."""
    given = {name: getattr(change, name) for name in change.model_fields_set}
    given = {name: value for name, value in given.items() if value is not None}
    if not given:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "Give at least one of slots, queue_max, aging_seconds, fair_shares, weights, paused",
        )
    record = await _changed(
        state, request, lambda current: (replace(current.limits, **given), None, None)
    )
    return _body(record)


@router.get(
    "/limits/{scope}",
    response_model=ScopeLimitsResponse,
    responses={422: CHANGE_ERRORS[422], 503: ERRORS[503]},
)
async def scope_limits(scope: ScopePath, state: StateDep) -> ScopeLimitsResponse:
    """The limits one scope follows now: the deployment's, with its own over them."""
    named = named_scope(state.runs.target, scope)
    return _scope_body(await _record(state), named)


@router.put("/limits/{scope}", response_model=ScopeLimitsResponse, responses=CHANGE_ERRORS)
async def set_scope_limits(
    scope: ScopePath, change: ScopeLimitsChangeRequest, request: Request, state: StateDep
) -> ScopeLimitsResponse:
    """Give one scope limits of its own (`slots`, `queue_max`, `weights`) over the
    deployment's; a field set to `null` follows the deployment's again. Takes effect on every
    replica within a second, as a deployment-wide change does."""
    named = named_scope(state.runs.target, scope)
    given = {name: getattr(change, name) for name in change.model_fields_set}
    if not given:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "Give at least one of slots, queue_max, weights"
        )
    return await _change(state, request, named, lambda own: replace(own, **given))


@router.delete(
    "/limits/{scope}",
    response_model=ScopeLimitsResponse,
    responses={422: CHANGE_ERRORS[422], 503: ERRORS[503]},
)
async def clear_scope_limits(
    scope: ScopePath, request: Request, state: StateDep
) -> ScopeLimitsResponse:
    """The scope follows the deployment's limits again (a pause stays until resumed)."""
    named = named_scope(state.runs.target, scope)
    return await _change(state, request, named, lambda own: ScopeOverride(paused=own.paused))


@router.post(
    "/scopes/{scope}/pause",
    response_model=ScopeLimitsResponse,
    responses={422: CHANGE_ERRORS[422], 503: ERRORS[503]},
)
async def pause_scope(scope: ScopePath, request: Request, state: StateDep) -> ScopeLimitsResponse:
    """Pause a scope: it keeps accepting and queueing runs (a `reject` start gets 409) and
    starts none; the agents at work finish. Answers once every replica follows it."""
    return await _pause(state, request, scope, paused=True)


@router.post(
    "/scopes/{scope}/resume",
    response_model=ScopeLimitsResponse,
    responses={422: CHANGE_ERRORS[422], 503: ERRORS[503]},
)
async def resume_scope(scope: ScopePath, request: Request, state: StateDep) -> ScopeLimitsResponse:
    """Resume a paused scope: its waiting runs are granted free slots at once, in order."""
    return await _pause(state, request, scope, paused=False)


async def _pause(
    state: AppState, request: Request, scope: str, *, paused: bool
) -> ScopeLimitsResponse:
    named = named_scope(state.runs.target, scope)

    def change(current: DeploymentSettings) -> tuple[ScopeLimits, Scope, ScopeOverride]:
        # Checked on the read the change is made from (one read, not a second before it).
        if not paused and current.limits.paused:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                "The whole deployment is paused: resume it with PUT /agents/limits "
                '{"paused": false}',
            )
        return current.limits, named, replace(_own(current, named), paused=paused)

    return _scope_body(await _changed(state, request, change), named)


async def _record(state: AppState) -> DeploymentSettings:
    runs = state.runs
    with temporal_call():
        record, _ = await read_deployment(
            runs.client, state.settings.workflow_id, runs.target.rpc_timeout
        )
    if record is None:
        raise TemporalUnavailableError("the deployment's settings record is not there yet")
    return record


def _own(record: DeploymentSettings, scope: Scope) -> ScopeOverride:
    return record.scopes.get(scope.label) or ScopeOverride()


async def _change(
    state: AppState,
    request: Request,
    scope: Scope,
    own: Callable[[ScopeOverride], ScopeOverride],
) -> ScopeLimitsResponse:
    """Set the scope's own limits to ``own(what they are)``."""
    record = await _changed(
        state,
        request,
        lambda current: (current.limits, scope, own(_own(current, scope))),
    )
    return _scope_body(record, scope)


Change = Callable[[DeploymentSettings], tuple[ScopeLimits, Scope | None, ScopeOverride | None]]


async def _changed(state: AppState, request: Request, change: Change) -> DeploymentSettings:
    """The record, changed as ``change(the record as read)`` says, made from the record's
    latest version: a change that another overtook between its read and its update is made
    again from a new read (two PUTs at once each answered 200 and one was lost).

    It is made within CHANGE_WITHIN budgets of the API taking it up, or never (the record
    refuses it after; a ``503`` before then may still take effect until then), and no try
    begins once its caller has gone:
    a change that got no answer never takes effect long after (a paused API, or an update
    held up on its way to the record, would otherwise make it later, over a newer one)."""
    loop = asyncio.get_running_loop()
    within = state.settings.temporal_rpc_timeout_seconds * CHANGE_WITHIN
    deadline = loop.time() + within
    not_after = datetime.now(UTC) + timedelta(seconds=within)
    for _ in range(CHANGE_TRIES):
        if await request.is_disconnected():
            logger.warning("limits_change_abandoned", reason="the caller went away")
            raise HTTPException(CLIENT_GONE, "The caller went away: nothing was changed")
        current = await _record(state)
        limits, scope, own = change(current)
        if loop.time() > deadline:
            raise TemporalUnavailableError("the change could not be made in time")
        try:
            # Its wait ends with the deadline (an update no worker takes up was waited on with
            # no end: a PUT with every worker down hung).
            with temporal_call():
                return await change_limits(
                    state.runs.client,
                    state.settings,
                    limits,
                    changed_by=caller(request),
                    scope=scope,
                    override=own,
                    based_on=current.version,
                    not_after=not_after,
                    wait=max(0.1, deadline - loop.time()),
                )
        except StaleChangeError:
            continue
        except ChangeExpiredError:
            raise TemporalUnavailableError("the change could not be made in time") from None
        except ValueError as err:  # refused by the record's own check (too many scopes)
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(err)) from None
    raise HTTPException(
        status.HTTP_409_CONFLICT, "The limits keep changing under this change, please retry"
    )


def _body(record: DeploymentSettings) -> LimitsResponse:
    return LimitsResponse(
        scope_kind=record.scope_kind.value,
        **asdict(record.limits),
        scopes={
            name: ScopeOwnLimits.model_validate(own, from_attributes=True)
            for name, own in record.scopes.items()
        },
        version=record.version,
        changed_by=record.changed_by,
        changed_at=record.changed_at,
    )


def _scope_body(record: DeploymentSettings, scope: Scope) -> ScopeLimitsResponse:
    own = record.scopes.get(scope.label)
    return ScopeLimitsResponse(
        scope=scope.label,
        **asdict(record.limits_for(scope.label)),
        own=ScopeOwnLimits.model_validate(own, from_attributes=True) if own else None,
        version=record.version,
        changed_by=record.changed_by,
        changed_at=record.changed_at,
    )
