"""What a run's execution carries besides its input: the memo that reads use without decoding
the input, the search attributes the Web UI and listings filter by, the one-line summary.

Written by whoever starts a run: the API, the queue, and a run handing its slot to the next
(workflow code: keep this module pure)."""

from __future__ import annotations

from typing import Any

from temporalio.common import SearchAttributePair, TypedSearchAttributes

from agent_runner import search_attributes
from agent_runner.models import AgentRunInput


def run_summary(agent_type: str, user_id: str) -> str:
    return f"{agent_type} for {user_id}"


def run_memo(run_input: AgentRunInput) -> dict[str, Any]:
    """What reads of the run need without decoding its input, and what the next run on the
    slot inherits (the bound it had to wait for: an ISO time, "" for none)."""
    handoff = run_input.handoff
    memo: dict[str, Any] = {
        "agent_type": run_input.agent_type,
        "user_id": run_input.user_id,
        "not_before": handoff.not_before.isoformat() if handoff and handoff.not_before else "",
    }
    if run_input.queued_id is not None:
        memo["queued_id"] = run_input.queued_id
    if run_input.queued_at is not None:
        memo["queued_at"] = run_input.queued_at.isoformat()
    if run_input.idempotency_key is not None:
        memo |= {
            "idempotency_key": run_input.idempotency_key,
            "request_fingerprint": run_input.request_fingerprint,
        }
    return memo


def run_search_attributes(run_input: AgentRunInput) -> TypedSearchAttributes:
    pairs: list[SearchAttributePair[str]] = [
        SearchAttributePair(search_attributes.AGENT_TYPE, run_input.agent_type),
        SearchAttributePair(search_attributes.USER_ID, run_input.user_id),
    ]
    if run_input.queued_id is not None:
        pairs.append(SearchAttributePair(search_attributes.AGENT_RUN_ID, run_input.queued_id))
    if run_input.idempotency_key is not None:
        pairs.append(
            SearchAttributePair(search_attributes.IDEMPOTENCY_KEY, run_input.idempotency_key)
        )
    return TypedSearchAttributes(pairs)
