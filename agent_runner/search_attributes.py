"""Search attributes set on every run, so the Web UI and the list endpoint can filter by them.

They must be registered on the server: ``make run``, the tests and the compose stack do it;
for another cluster run ``temporal operator search-attribute create`` (see the README).
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

AGENT_TYPE = SearchAttributeKey.for_keyword("AgentType")
USER_ID = SearchAttributeKey.for_keyword("UserId")
IDEMPOTENCY_KEY = SearchAttributeKey.for_keyword("IdempotencyKey")
ALL = (AGENT_TYPE, USER_ID, IDEMPOTENCY_KEY)
