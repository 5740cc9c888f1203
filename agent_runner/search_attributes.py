"""Search attributes, so the Web UI and the list endpoint can filter runs and see queues.

They must be registered on the server: ``make run``, the tests and the compose stack do it;
for another cluster run ``temporal operator search-attribute create`` (see the README).
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

AGENT_TYPE = SearchAttributeKey.for_keyword("AgentType")
USER_ID = SearchAttributeKey.for_keyword("UserId")
IDEMPOTENCY_KEY = SearchAttributeKey.for_keyword("IdempotencyKey")
# On the slot execution of a run that waited in a queue: the run id its client knows.
AGENT_RUN_ID = SearchAttributeKey.for_keyword("AgentRunId")
# On a queue workflow: how many runs wait in it.
QUEUE_DEPTH = SearchAttributeKey.for_int("AgentQueueDepth")
ALL = (AGENT_TYPE, USER_ID, IDEMPOTENCY_KEY, AGENT_RUN_ID, QUEUE_DEPTH)
