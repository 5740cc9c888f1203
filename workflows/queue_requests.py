"""Answering enqueue requests: accept a run (or refuse it, saying why), and answer a repeated
request (a client's retry, a reused Idempotency-Key) as it was answered the first time."""

from __future__ import annotations

from dataclasses import replace

from temporalio import workflow

from workflows.queue_display import QueueDisplay, queued

with workflow.unsafe.imports_passed_through():
    from agent_runner.locations import QueuedRun, Scope
    from agent_runner.queue_types import (
        Answer,
        EnqueueRequest,
        EnqueueResult,
        QueueEntry,
        QueueState,
    )
    from agent_runner.validation import InvalidRunInputError, parse_run_input

# Requests whose first answer is kept, for repeats (the most recent ones): a call retried by
# the client after this workflow continued as new, and requests with an Idempotency-Key.
_ANSWERS_KEPT = 2000


class QueueRequests:
    def __init__(self, scope: Scope, state: QueueState, display: QueueDisplay) -> None:
        self._scope = scope
        self._state = state
        self._display = display

    def accept(self, request: EnqueueRequest, *, remember: bool) -> EnqueueResult | QueueEntry:
        earlier = self._state.answered.get(request.request_id)
        if earlier is not None:
            if earlier.fingerprint != request.request_fingerprint:
                return EnqueueResult(request.request_id, refused="key reused")
            return self.current(earlier.result)
        config = self._state.config
        try:
            run_input = parse_run_input(
                {
                    "agent_type": request.agent_type,
                    "user_id": request.user_id,
                    "policy": request.policy or config.default_policy,
                    "params": request.params,
                }
            )
        except InvalidRunInputError as err:
            return EnqueueResult(request.request_id, refused=str(err))
        if len(self._state.queue) >= config.queue_max:
            return EnqueueResult(request.request_id, refused="full")
        run_id = QueuedRun(self._scope, workflow.info().run_id, self._state.next_number).run_id
        self._state.next_number += 1
        entry = QueueEntry(
            run_id=run_id,
            request_id=request.request_id,
            run_input=replace(
                run_input,
                queued_id=run_id,
                queued_at=workflow.now(),
                idempotency_key=request.idempotency_key,
                request_fingerprint=request.request_fingerprint,
            ),
            enqueued_at=workflow.now(),
        )
        self._state.queue.append(entry)
        self._display.record(run_id, queued(entry))
        if remember:
            # Remembered now, before the handler awaits anything: a repeat of this request
            # handed to the workflow meanwhile (a retry after a 503) gets this run, not its own.
            self.remember(
                request,
                EnqueueResult(request.request_id, run_id=run_id, workflow_id=self._scope.queue_id),
            )
        return entry

    def answer(self, answer: EnqueueResult | QueueEntry) -> EnqueueResult:
        if isinstance(answer, EnqueueResult):
            return answer
        return self.current(
            EnqueueResult(answer.request_id, run_id=answer.run_id, workflow_id=self._scope.queue_id)
        )

    def current(self, result: EnqueueResult) -> EnqueueResult:
        """An earlier answer, with the run's place in the queue as it is now."""
        position = next(
            (i for i, entry in enumerate(self._state.queue, 1) if entry.run_id == result.run_id),
            None,
        )
        return replace(result, queue_position=position)

    def remember(self, request: EnqueueRequest, result: EnqueueResult) -> None:
        answered = self._state.answered
        answered.setdefault(request.request_id, Answer(result, request.request_fingerprint))
        while len(answered) > _ANSWERS_KEPT:
            del answered[next(iter(answered))]
