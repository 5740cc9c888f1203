"""Forged messages from another client of the namespace (issue 18), each kind sent with garbage
and with plausible-looking values: ``claim_attempt`` and ``report_attempt`` updates to a working
run, ``admit`` updates to a coordinator, and signals (``progress``, and names nobody handles) to
runs and coordinators.

A plausible ``admit`` is another system starting a run: the coordinator's answer is recorded as
a start (client ``nemesis``, api -1, the scope it was sent to), so the run is judged like any
other. With more than one scope, one user's run is also sent to every other scope's coordinator
at once: a coordinator that takes a run of another scope's user could let that user have more
than N agents.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from typing import Any

from chaos.faults.attempts import AttemptFault
from chaos.faults.base import Fault
from chaos.faults.places import base_id, scope_ids, user_of_scope
from chaos.history import Op
from chaos.stack import ChaosStack
from chaos.temporal_cli import CliResult, as_json, run_cli, signal, update, update_answer

MESSAGES = "messages"
# Admission -> the status the API would have answered it with.
ANSWERS = {"started": 202, "queued": 202, "busy": 409, "full": 409, "key_reused": 422}


def _commitment() -> str:
    return hashlib.sha256(secrets.token_bytes(32)).hexdigest()


class ForgeClaim(AttemptFault):
    kind = "forge-claim"

    async def inject(self, stack: ChaosStack) -> dict[str, Any]:
        aimed, address = self.aimed, stack.server.address
        run = aimed.execution.workflow_id
        values: list[Any] = [
            "garbage",
            {"attempt": "one", "commitment": 5},
            {"attempt": aimed.attempt, "commitment": _commitment()},
            {"attempt": aimed.attempt + 1, "commitment": _commitment()},
        ]
        sent = [(await update(address, run, "claim_attempt", value)).record() for value in values]
        coordinator = run.rsplit(":slot-", 1)[0]
        value = {"attempt": 1, "commitment": _commitment()}
        sent.append((await update(address, coordinator, "claim_attempt", value)).record())
        return {"sent": sent}


class ForgeReport(AttemptFault):
    kind = "forge-report"

    async def inject(self, stack: ChaosStack) -> dict[str, Any]:
        aimed, address = self.aimed, stack.server.address
        run = aimed.execution.workflow_id
        key = secrets.token_hex(32)
        values: list[Any] = [
            [],
            {"attempt": aimed.attempt},
            {"attempt": aimed.attempt, "stop_key": key, "result": "approved", "kind": "done"},
            {"attempt": aimed.attempt, "stop_key": key, "kind": "cancelled", "reason": "forged"},
        ]
        sent = [(await update(address, run, "report_attempt", value)).record() for value in values]
        return {"sent": sent}


class ForgeSignals(AttemptFault):
    kind = "forge-signal"

    async def inject(self, stack: ChaosStack) -> dict[str, Any]:
        aimed, address = self.aimed, stack.server.address
        run = aimed.execution.workflow_id
        coordinator = run.rsplit(":slot-", 1)[0]
        progress = {"attempt": aimed.attempt, "fraction": 0.99, "message": "forged"}
        sent: list[CliResult] = [
            await signal(address, run, "progress", progress),
            await signal(address, run, "progress", "garbage"),
            await signal(address, run, "predecessor_stopped", aimed.run_id),
            await signal(address, run, "claim", {}),
            await signal(address, coordinator, "progress", progress),
            await signal(address, coordinator, "admit", []),
            await signal(address, coordinator, "bogus", None),
        ]
        return {"sent": [result.record() for result in sent]}


FORGE_FAN_OUT = 5


class ForgeAdmit(Fault):
    kind = "forge-admit"

    @classmethod
    def targets(cls, stack: ChaosStack) -> list[str]:
        return [MESSAGES]

    @property
    def affects(self) -> list[str]:
        return []

    async def inject(self, stack: ChaosStack) -> dict[str, Any]:
        config = stack.recorder.config
        scope_id = self.rng.choice(scope_ids(stack))
        user = user_of_scope(stack, scope_id, self.rng)
        agent_type = self.rng.choice(config.agent_types)
        policy = {
            "max_attempts": 2,
            "timeout_seconds": 30.0,
            "heartbeat_timeout_seconds": 1.0,
            "retry_initial_interval_seconds": 0.2,
        }
        plausible: list[tuple[str, dict[str, Any], str]] = [
            (scope_id, {"agent_type": agent_type, "user_id": user}, "enqueue"),
            (scope_id, {"agent_type": agent_type, "user_id": user, "policy": policy}, "enqueue"),
            (scope_id, {"agent_type": agent_type, "user_id": user}, "reject"),
        ]
        sent = []
        for garbage in ("garbage", [{"request_id": 5}], [{"request_id": "x", "run": {}}]):
            sent.append((await self._admit(stack, scope_id, garbage)).record())
        for target, run, on_busy in plausible:
            sent.append(await self._plausible(stack, target, run, on_busy))
        # The same user's runs sent to other scopes' coordinators at once: if they take them,
        # that user may get more than N agents. At most FORGE_FAN_OUT of them: with 200 users,
        # "every other scope" was 199 `temporal` processes at once on 2 cores, a load burst that
        # slowed the API's starts past their budget (seed 41593), not a test of trust.
        others = [other for other in scope_ids(stack) if other != scope_id]
        others = self.rng.sample(others, min(len(others), FORGE_FAN_OUT))
        victim = {"agent_type": agent_type, "user_id": user}
        sent += await asyncio.gather(
            *(self._plausible(stack, other, victim, "enqueue") for other in others)
        )
        return {"scope_id": scope_id, "sent": sent}

    async def _plausible(
        self, stack: ChaosStack, scope_id: str, run: dict[str, Any], on_busy: str
    ) -> dict[str, Any]:
        request = {"request_id": f"nemesis-{secrets.token_hex(8)}", "run": run}
        result = await self._admit(stack, scope_id, [{**request, "on_busy": on_busy}])
        self._record(stack, scope_id, run, on_busy, result)
        return result.record()

    async def _admit(self, stack: ChaosStack, scope_id: str, value: Any) -> CliResult:
        return await run_cli(
            stack.server.address,
            "workflow",
            "execute-update-with-start",
            "--workflow-id",
            scope_id,
            "--type",
            "AgentScopeWorkflow",
            "--task-queue",
            str(stack.settings().task_queue),
            "--id-conflict-policy",
            "UseExisting",
            "--update-name",
            "admit",
            "--update-input",
            as_json(value),
            "-o",
            "json",
        )

    def _record(
        self,
        stack: ChaosStack,
        scope_id: str,
        run: dict[str, Any],
        on_busy: str,
        result: CliResult,
    ) -> None:
        """The admit as a start in the history (the coordinator's answer in the API's terms)."""
        answer = _answer(result)
        admission = str(answer.get("admission")) if answer else None
        status = ANSWERS.get(admission or "", 422 if admission else None)
        # The scope as the checker names it: "global", "user:<id>", "type:<name>".
        scope = scope_id.removeprefix(base_id(stack)).lstrip(":")
        body: dict[str, Any] = {"agent_type": run["agent_type"], "user_id": run["user_id"]}
        stack.recorder.op(
            Op(
                index=stack.recorder.next_op_index(),
                client="nemesis",
                kind="start",
                phase="chaos",
                api=-1,
                request={
                    "body": {**body, "on_busy": on_busy},
                    "key": None,
                    "scope": scope or "global",
                    "via": "admit",
                },
                started=result.started,
                ended=result.ended,
                status=status,
                body={
                    "run_id": answer.get("run_id"),
                    "queue_position": answer.get("queue_position"),
                }
                if status == 202
                else answer,
                error=None if status is not None else f"cli exit {result.returncode}",
            )
        )


def _answer(result: CliResult) -> dict[str, Any]:
    """The one answer of an ``admit`` of one request (empty when there is none)."""
    answers = update_answer(result)
    first = answers[0] if isinstance(answers, list) and answers else None
    return first if isinstance(first, dict) else {}
