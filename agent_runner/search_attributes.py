"""Search attributes, so the Web UI and the list endpoint can filter runs and see queues.

They must be registered on the server: ``make run``, the tests and the compose stack do it;
for another cluster run ``temporal operator search-attribute create`` (see the README).
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

AGENT_TYPE = SearchAttributeKey.for_keyword("AgentType")
USER_ID = SearchAttributeKey.for_keyword("UserId")
IDEMPOTENCY_KEY = SearchAttributeKey.for_keyword("IdempotencyKey")
# On a run's execution on its slot: the run id its client knows.
AGENT_RUN_ID = SearchAttributeKey.for_keyword("AgentRunId")
# On a scope's coordinator: how many runs wait in its queue, and how many of its slots are busy.
QUEUE_DEPTH = SearchAttributeKey.for_int("AgentQueueDepth")
SLOTS_BUSY = SearchAttributeKey.for_int("AgentSlotsBusy")
ALL = (AGENT_TYPE, USER_ID, IDEMPOTENCY_KEY, AGENT_RUN_ID, QUEUE_DEPTH, SLOTS_BUSY)
