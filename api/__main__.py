"""``python -m api``: serve the API with uvicorn on API_HOST:API_PORT, logging as JSON.

On SIGTERM or SIGINT uvicorn stops accepting connections, then waits for the open ones to end
before it runs the app's lifespan shutdown; an events stream of an open run never ends by
itself, so that wait had no end. Here the open streams end as soon as the shutdown starts
(their clients reconnect, to another replica, with Last-Event-ID), and whatever request still
holds a connection after ``GRACEFUL_SHUTDOWN_SECONDS`` is cancelled.

A client must send a request's headers within API_HEADER_TIMEOUT_SECONDS and its body within
API_BODY_TIMEOUT_SECONDS after them (api/connections.py), and the process serves at most
API_MAX_CONNECTIONS connections at once: a request on one more is answered 503 and closed.
"""

from __future__ import annotations

import contextlib
import socket

import uvicorn

from agent_runner.process import exit_now
from agent_runner.runs.watchers import Watchers
from agent_runner.settings import get_settings
from api.connections import request_deadlines

# The most open requests (long polls, say) get to finish once the shutdown starts: well within
# Docker's default 10 s between SIGTERM and SIGKILL, and Kubernetes' 30 s.
GRACEFUL_SHUTDOWN_SECONDS = 5
KEEP_ALIVE_SECONDS = 75
# uvicorn's exit code when the server could not start.
STARTUP_FAILURE = 3


class Server(uvicorn.Server):
    """uvicorn's server, ending this process's events streams as its shutdown starts."""

    def __init__(self, config: uvicorn.Config, watchers: Watchers) -> None:
        super().__init__(config)
        self.watchers = watchers

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.watchers.end_streams()
        await super().shutdown(sockets)


def main() -> None:
    from api.main import app

    settings = get_settings()
    config = uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        # Longer than clients' and load balancers' idle timeouts (httpx 5 s, nginx 60 s, AWS
        # ALB 60 s), so the client side drops an idle connection first: with equal timeouts a
        # request sent on a connection the server is closing fails with a reset (uvicorn's
        # default is 5 s).
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        http=request_deadlines(
            header_timeout=settings.api_header_timeout_seconds,
            body_timeout=settings.api_body_timeout_seconds,
        ),
        # uvicorn answers 503 once the connections, the asking one included, reach this.
        limit_concurrency=settings.api_max_connections + 1,
    )
    server = Server(config, app.state.agent_runner.watchers)
    # uvicorn re-raises the SIGINT it stopped for: stopped as asked, no traceback.
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    exit_now(0 if server.started else STARTUP_FAILURE)


if __name__ == "__main__":
    main()
