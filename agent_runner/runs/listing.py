"""Listing runs from Temporal visibility, newest first, with filters and page tokens."""

from __future__ import annotations

import base64
import binascii
import uuid

from temporalio.client import Client, WorkflowExecution, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from agent_runner import search_attributes
from agent_runner.runs.errors import InvalidPageTokenError, temporal_call
from agent_runner.runs.read import get_run_status
from agent_runner.runs.types import RunPage, RunState, RunSummary, RunTarget

_BAD_PAGE_TOKEN_DETAIL = "page_token is not a token this service returned"  # noqa: S105
# What visibility can say of a run without describing it; open runs need a describe.
_CLOSED_STATES = {
    WorkflowExecutionStatus.COMPLETED: RunState.DONE,
    WorkflowExecutionStatus.FAILED: RunState.ERROR,
    WorkflowExecutionStatus.CANCELED: RunState.ERROR,
    WorkflowExecutionStatus.TERMINATED: RunState.ERROR,
    WorkflowExecutionStatus.TIMED_OUT: RunState.ERROR,
}
_STATE_QUERIES = {
    RunState.PENDING: "ExecutionStatus = 'Running'",
    RunState.RUNNING: "ExecutionStatus = 'Running'",
    RunState.DONE: "ExecutionStatus = 'Completed'",
    RunState.ERROR: ("ExecutionStatus IN ('Failed', 'Canceled', 'Terminated', 'TimedOut')"),
}


async def list_runs(
    client: Client,
    *,
    target: RunTarget,
    agent_type: str | None = None,
    user_id: str | None = None,
    state: RunState | None = None,
    limit: int = 20,
    page_token: str | None = None,
) -> RunPage:
    """Runs of the workflow id, newest first, from Temporal visibility (no database of ours).

    Runs never overlap, so visibility's order (open first, then by close time) is start order.
    ``agent_type`` must be a supported type and ``user_id`` a UUID: both are quoted into the
    query as they are.
    """
    clauses = [f"WorkflowId = '{target.workflow_id}'"]
    if agent_type is not None:
        clauses.append(f"{search_attributes.AGENT_TYPE.name} = '{agent_type}'")
    if user_id is not None:
        clauses.append(f"{search_attributes.USER_ID.name} = '{uuid.UUID(user_id)}'")
    if state is not None:
        clauses.append(_STATE_QUERIES[state])
    executions = client.list_workflows(
        " AND ".join(clauses),
        page_size=limit,
        next_page_token=_decode_page_token(page_token),
        rpc_timeout=target.rpc_timeout,
    )
    with temporal_call():
        try:
            await executions.fetch_next_page()
        except RPCError as err:
            # Servers reject a forged token as INVALID_ARGUMENT, or (SQL visibility) UNKNOWN.
            if page_token and err.status in (RPCStatusCode.INVALID_ARGUMENT, RPCStatusCode.UNKNOWN):
                raise InvalidPageTokenError(_BAD_PAGE_TOKEN_DETAIL) from None
            raise
        runs = [
            await _summary(client, target, execution) for execution in executions.current_page or []
        ]
    if state is not None:
        runs = [run for run in runs if run.state == state]
    token = executions.next_page_token
    return RunPage(runs, base64.urlsafe_b64encode(token).decode() if token else None)


def _decode_page_token(page_token: str | None) -> bytes | None:
    if not page_token:
        return None
    try:
        return base64.b64decode(page_token.encode(), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise InvalidPageTokenError(_BAD_PAGE_TOKEN_DETAIL) from None


async def _summary(client: Client, target: RunTarget, execution: WorkflowExecution) -> RunSummary:
    memo = await execution.memo()
    closed_state = _CLOSED_STATES.get(execution.status) if execution.status else None
    if closed_state is None:
        # The one open run: only a describe tells PENDING from RUNNING.
        closed_state = (await get_run_status(client, execution.run_id, target=target)).state
    return RunSummary(
        run_id=execution.run_id,
        agent_type=memo.get("agent_type"),
        user_id=memo.get("user_id"),
        state=closed_state,
        started_at=execution.start_time,
        finished_at=execution.close_time,
    )
