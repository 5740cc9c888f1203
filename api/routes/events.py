"""GET /agents/runs/{run_id}/events: a run's status as Server-Sent Events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Header, HTTPException, status
from fastapi.responses import Response, StreamingResponse

from agent_runner.logs import bind_run_context
from agent_runner.runs import RunNotFoundError
from agent_runner.runs.follow import EVENT_ID_PATTERN
from agent_runner.runs.watchers import RunWatch
from agent_runner.status import EVENT_NAMES
from api.deps import StateDep
from api.routes.common import ERRORS, NOT_FOUND_DETAIL, agents_router

# A comment line this often keeps idle connections (and the proxies between) open.
KEEPALIVE_SECONDS = 15.0
# How long a client waits before reconnecting, told to it at the start of the stream.
RECONNECT_MILLISECONDS = 1000
# How long the stream may take to learn anything of the run before it answers 503.
FIRST_EVENT_SECONDS = 10.0
# The last line of a stream ended because this API process shuts down.
SHUTDOWN_COMMENT = b": server shutting down; reconnect with Last-Event-ID\n\n"
# Last-Event-ID: an event id the stream sent, space around it allowed (HTTP parsers strip it,
# not every one), or nothing.
LAST_EVENT_ID_PATTERN = rf"^[ \t]*(?:{EVENT_ID_PATTERN})?[ \t]*$"

router = agents_router()


@router.get(
    "/runs/{run_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": (
                "One event per change: `id:` (send it back as `Last-Event-ID` to resume), "
                f"`event:` ({', '.join(EVENT_NAMES)}) and `data:`, the run's status "
                "(RunStatusResponse) at that moment. After `done` or `error` the server closes "
                f"the stream; a `: keepalive` comment comes every {KEEPALIVE_SECONDS:g} s."
            ),
        },
        204: {
            "description": (
                "The run has ended and `Last-Event-ID` is its last event: nothing more will "
                "come (an EventSource stops reconnecting)"
            )
        },
        **ERRORS,
    },
)
async def run_events(
    run_id: str,
    state: StateDep,
    last_event_id: Annotated[
        str,
        Header(
            max_length=64,
            pattern=LAST_EVENT_ID_PATTERN,
            description=(
                "Resume after this event: the events after it, none again. An id past the "
                "run's last event gets that event again; text that is no event id is a 422."
            ),
        ),
    ] = "",
) -> Response:
    """Follow a run live: its queue position, PENDING, RUNNING with each attempt, each failed
    attempt with its reason and whether it is retried, progress reports, and its end. Any API
    replica serves any stream."""
    bind_run_context(agent_type=None, user_id=None, run_id=run_id)
    resume_after = _resumed_after(last_event_id)
    runs = state.runs
    try:
        runs.locate(run_id)
    except RunNotFoundError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND_DETAIL) from None
    watch = state.watchers.watch(runs, run_id)
    if watch is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "This API process follows too many runs; retry later",
            headers={"Retry-After": "5"},
        )
    try:
        await watch.first(FIRST_EVENT_SECONDS)
    except RunNotFoundError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND_DETAIL) from None
    if resume_after is not None:
        # Where to resume is decided on every change recorded so far (this process may have
        # just started following the run), so an id from another replica is placed right.
        await watch.caught_up(FIRST_EVENT_SECONDS)
    if watch.final and resume_after == watch.published[-1].event.id:
        # The client saw the end: 204 tells an EventSource to stop reconnecting.
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return StreamingResponse(
        _stream(watch, resume_after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _resumed_after(last_event_id: str) -> str | None:
    """The event id a client resumes after (its header matched LAST_EVENT_ID_PATTERN); None
    when it does not resume."""
    return last_event_id.strip(" \t") or None


async def _stream(watch: RunWatch, last_event_id: str | None) -> AsyncIterator[bytes]:
    yield f"retry: {RECONNECT_MILLISECONDS}\n\n".encode()
    final = False
    async for published in watch.events_after(last_event_id, KEEPALIVE_SECONDS):
        if published is None:
            yield b": keepalive\n\n"
            continue
        event = published.event
        final = event.status.is_final
        yield b"id: %s\nevent: %s\ndata: %s\n\n" % (
            event.id.encode(),
            event.name.encode(),
            published.body,
        )
    if not final and watch.ending:
        # This process is shutting down; the client reconnects (to another replica) with
        # Last-Event-ID and misses nothing.
        yield SHUTDOWN_COMMENT
