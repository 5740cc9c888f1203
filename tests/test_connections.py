"""Slow and greedy clients against a real ``python -m api``: connections that send nothing,
half a header or part of a body are closed once their deadline passes, and the process's file
descriptors come back to where they were, while normal requests are served and an idle
kept-alive connection stays open; connections over API_MAX_CONNECTIONS get 503."""

from __future__ import annotations

import http.client
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx

from devtools.processes import free_port
from tests.helpers import USER_ID, LoggedProcess, assert_eventually, make_settings, wait_http

# Short, so that the test is quick; the defaults are 10 s.
HEADER_TIMEOUT_SECONDS = 2.0
BODY_TIMEOUT_SECONDS = 2.0
# Generous: a deadline for the server to act, never a measured duration.
CLOSE_DEADLINE_SECONDS = 30.0
# Connections of each kind: together well over what a process should keep for nothing.
STALLED_PER_KIND = 200
# Descriptors the API may hold beyond its baseline once the stalled connections are gone:
# the kept-alive connection and the test client's own.
SPARE_DESCRIPTORS = 5

HALF_A_HEADER = b"GET /healthz HTTP/1.1\r\nHost: agent-runner\r\nX-Slow: "
PART_OF_A_BODY = (
    b"POST /agents/run HTTP/1.1\r\nHost: agent-runner\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100\r\n\r\n"
    b'{"ag'
)
HEALTH_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: agent-runner\r\n\r\n"


@asynccontextmanager
async def api_at(
    tmp_path: Path, temporal_address: str, **settings: object
) -> AsyncIterator[tuple[str, int]]:
    """A real API process on a free port, serving an idle task queue: its URL and its pid."""
    chosen = make_settings(
        temporal_address, task_queue=f"idle-{uuid.uuid4()}", api_port=free_port(), **settings
    )
    api = LoggedProcess.api(chosen, tmp_path / "api.log")
    try:
        url = f"http://127.0.0.1:{chosen.api_port}"
        await wait_http(f"{url}/healthz")
        yield url, api.pid
    finally:
        api.stop()


def descriptors(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


@contextmanager
def open_sockets(port: int, count: int, sending: bytes) -> Iterator[list[socket.socket]]:
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            if sending:
                sock.sendall(sending)
            sock.setblocking(False)
            sockets.append(sock)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed the connection (whatever it sent before)."""
    try:
        while sock.recv(65536):
            pass
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    return True


def kept_alive(port: int) -> http.client.HTTPConnection:
    """A connection that has been served one request and stays open for the next."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/healthz")
    response = connection.getresponse()
    response.read()
    assert response.status == 200
    return connection


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def test_stalled_requests_are_closed_at_their_deadline_and_descriptors_come_back(
    temporal_address: str, tmp_path: Path
) -> None:
    async with api_at(
        tmp_path,
        temporal_address,
        api_header_timeout_seconds=HEADER_TIMEOUT_SECONDS,
        api_body_timeout_seconds=BODY_TIMEOUT_SECONDS,
    ) as (url, pid):
        port = port_of(url)
        idle = kept_alive(port)
        baseline = descriptors(pid)
        # A kept-alive connection whose next request stalls half-way through its headers.
        stalling_later = kept_alive(port)
        assert stalling_later.sock is not None
        stalling_later.sock.sendall(HALF_A_HEADER)
        with (
            open_sockets(port, STALLED_PER_KIND, b"") as silent,
            open_sockets(port, STALLED_PER_KIND, HALF_A_HEADER) as half_headers,
            open_sockets(port, STALLED_PER_KIND, PART_OF_A_BODY) as part_bodies,
        ):
            stalled = [*silent, *half_headers, *part_bodies]
            # Served meanwhile: a read, and a start whose body is read and judged (no worker
            # serves this API's task queue, so an unknown agent type is the answer it can give).
            async with httpx.AsyncClient(base_url=url, timeout=15.0) as http_client:
                health = await http_client.get("/healthz")
                started = await http_client.post(
                    "/agents/run", json={"agent_type": "no-such-agent", "user_id": USER_ID}
                )
            assert health.status_code == 200, health.text
            assert started.status_code == 400, started.text

            async def all_closed() -> None:
                still_open = [sock for sock in stalled if not closed_by_server(sock)]
                assert not still_open, (
                    f"{len(still_open)} of {len(stalled)} stalled connections are still open; "
                    f"the API holds {descriptors(pid)} descriptors (baseline {baseline})"
                )
                assert stalling_later.sock is not None
                assert closed_by_server(stalling_later.sock), "a stalled second request"
                assert descriptors(pid) <= baseline + SPARE_DESCRIPTORS

            await assert_eventually(
                all_closed, timeout=HEADER_TIMEOUT_SECONDS + CLOSE_DEADLINE_SECONDS, interval=0.5
            )
        # Idle for longer than the header deadline, it is still open: only a request that has
        # started is timed.
        idle.request("GET", "/healthz")
        response = idle.getresponse()
        assert response.status == 200
        response.read()
        idle.close()
        stalling_later.close()


async def test_connections_over_the_cap_get_503_until_one_closes(
    temporal_address: str, tmp_path: Path
) -> None:
    cap = 10
    async with api_at(tmp_path, temporal_address, api_max_connections=cap) as (url, _):
        port = port_of(url)
        held = [kept_alive(port) for _ in range(cap)]
        try:
            over = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            over.request("GET", "/healthz")
            refused = over.getresponse()
            refused.read()
            over.close()
            assert refused.status == 503

            held.pop().close()

            async def served_again() -> None:
                again = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                try:
                    again.request("GET", "/healthz")
                    response = again.getresponse()
                    response.read()
                finally:
                    again.close()
                assert response.status == 200

            await assert_eventually(served_again, timeout=CLOSE_DEADLINE_SECONDS)
        finally:
            for connection in held:
                connection.close()
