"""POST /agents/run: start a run on a free slot, or refuse or enqueue it when none is."""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import Header, HTTPException, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from agent_runner.agent_registry import InvalidParamsError
from agent_runner.logs import bind_run_context
from agent_runner.runs import (
    AgentBusyError,
    IdempotencyKeyReusedError,
    QueueFullError,
    StartOutcome,
    StartRequest,
    start_request,
)
from agent_runner.validation import UnsupportedAgentTypeError, unsupported_agent_type_message
from api.deps import AppState, StateDep
from api.retry_after import retry_after_seconds
from api.routes.common import ERRORS, agents_router, status_url
from api.schemas import SAFE_KEY_PATTERN, BusyResponse, ErrorResponse, RunAccepted, RunRequest

BUSY_DETAIL = "An agent is already running, please retry later"
PAUSED_DETAIL = "This scope is paused, please retry later"
QUEUE_FULL_DETAIL = "The queue is full, please retry later"

router = agents_router()
logger = structlog.stdlib.get_logger(__name__)


@router.post(
    "/run",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RunAccepted,
    responses={
        200: {
            "model": RunAccepted,
            "description": (
                "`on_busy=attach` found an open run of the same `agent_type`, `user_id` and "
                "`params` in the scope: its `run_id` (`attached: true`); nothing was started"
            ),
        },
        400: {
            "model": ErrorResponse,
            "description": "Unsupported agent_type (see GET /agents/types)",
        },
        409: {
            "model": BusyResponse,
            "description": (
                "Every slot is taken or runs are queued (`reject`), the scope is paused "
                '(`reject`: "This scope is paused, please retry later"), or the queue is full '
                "(`enqueue`, `attach`, `replace`); see `Location` and `Retry-After`"
            ),
        },
        413: {"model": ErrorResponse, "description": "Body over API_MAX_BODY_BYTES"},
        415: ERRORS[415],
        422: {
            "description": (
                "Malformed body, `params` that do not fit the agent (each problem's `loc` "
                "names the field), or an Idempotency-Key reused for another request"
            )
        },
        503: ERRORS[503],
    },
)
async def run_agent(
    body: RunRequest,
    # Only the app state (the client is on it): a burst of starts resolves one dependency each.
    state: StateDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            pattern=SAFE_KEY_PATTERN,
            description=(
                "Repeat a request safely: the same key and body return the same run_id, "
                "even after the run finished (while Temporal retains it)."
            ),
        ),
    ] = None,
) -> RunAccepted | JSONResponse:
    """Start a run. At most `AGENT_SLOTS` run at once per scope, across every replica: a start
    when none is free gets 409, or with `"on_busy": "enqueue"` a place in the queue (served by
    `priority`, then first come; with fair shares, by weighted round-robin over fairness
    keys), or with `"on_busy": "attach"` the open run of the same request."""
    user_id = str(body.user_id)
    bind_run_context(agent_type=body.agent_type, user_id=user_id, run_id=None)
    request = _checked_request(state, body, idempotency_key)
    try:
        outcome = await state.runs.start(request)
    except IdempotencyKeyReusedError as err:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(err)) from None
    except QueueFullError:
        return _queue_full(state)
    except AgentBusyError as err:
        return busy_response(state, err)
    accepted = _accepted(state, body.agent_type, user_id, outcome, idempotency_key)
    if outcome.attached:
        return JSONResponse(accepted.model_dump(), status.HTTP_200_OK)
    return accepted


def _checked_request(
    state: AppState, body: RunRequest, idempotency_key: str | None
) -> StartRequest:
    """The request, checked against the agents installed here: 400 for an unknown agent type
    (the seed's log line), 422 naming the parameter that does not fit the agent's model."""
    if body.agent_type not in state.agents:
        reason = unsupported_agent_type_message(body.agent_type, state.agents)
        logger.warning("unsupported_agent_type", message="Unsupported agent_type", reason=reason)
        raise HTTPException(status.HTTP_400_BAD_REQUEST, reason)
    try:
        params = state.agents.params(body.agent_type, body.params)
        return start_request(
            body.agent_type,
            str(body.user_id),
            policy=state.policy_for(body.agent_type),
            params=params.model_dump(mode="json"),
            idempotency_key=idempotency_key,
            on_busy=body.on_busy,
            priority=body.priority,
            fairness_key=body.fairness_key,
            queue_timeout_seconds=body.queue_timeout_seconds,
        )
    except InvalidParamsError as err:
        logger.info("invalid_params", reason=str(err))
        raise RequestValidationError(
            [{**error, "loc": ("body", "params", *error["loc"])} for error in err.errors]
        ) from None
    except UnsupportedAgentTypeError as err:
        logger.warning("unsupported_agent_type", message="Unsupported agent_type", reason=str(err))
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(err)) from None


def _accepted(
    state: AppState,
    agent_type: str,
    user_id: str,
    outcome: StartOutcome,
    idempotency_key: str | None,
) -> RunAccepted:
    bind_run_context(agent_type=agent_type, user_id=user_id, run_id=outcome.run_id)
    if outcome.attached and not outcome.replayed:
        logger.info("run_attached", idempotency_key=idempotency_key)
    elif outcome.replayed:
        # The run was accepted (and counted) when the key was first used.
        logger.info("run_replayed", idempotency_key=idempotency_key)
    else:
        state.metrics.runs_accepted.inc()
        if outcome.queue_position is not None:
            state.metrics.runs_queued.inc()
        logger.info(
            "run_accepted",
            idempotency_key=idempotency_key,
            queue_position=outcome.queue_position,
            replaced_run_id=outcome.replaced_run_id,
        )
    return RunAccepted(
        run_id=outcome.run_id,
        queue_position=outcome.queue_position,
        attached=outcome.attached,
        replaced_run_id=outcome.replaced_run_id,
    )


def _queue_full(state: AppState) -> JSONResponse:
    state.metrics.runs_rejected_busy.inc()
    logger.info("run_rejected", reason="queue full")
    retry_after = retry_after_seconds(None, state.settings.agent_duration_seconds)
    return JSONResponse(
        BusyResponse(detail=QUEUE_FULL_DETAIL).model_dump(),
        status.HTTP_409_CONFLICT,
        headers={"Retry-After": str(retry_after)},
    )


def busy_response(state: AppState, busy: AgentBusyError) -> JSONResponse:
    state.metrics.runs_rejected_busy.inc()
    # DEBUG: a burst of rejections would flood the log; the access log line (with agent_type
    # and user_id bound) and agent_runner_runs_rejected_busy_total already record each one.
    logger.debug("run_rejected", reason="busy", running_run_id=busy.running_run_id)
    headers = {}
    if busy.running_run_id:
        headers["Location"] = status_url(busy.running_run_id)
    headers["Retry-After"] = str(
        retry_after_seconds(busy.running_since, state.settings.agent_duration_seconds)
    )
    detail = PAUSED_DETAIL if busy.paused else BUSY_DETAIL
    body = BusyResponse(detail=detail, running_run_id=busy.running_run_id)
    return JSONResponse(body.model_dump(), status.HTTP_409_CONFLICT, headers=headers)
