"""Stopping and losing processes, as real processes: an API with an events stream open ends
the stream and exits on SIGTERM (it used to wait for the stream for ever), and `make run`
(``python -m scripts.run_stack``) restarts a worker that dies instead of stopping the stack,
but gives up on a child that keeps dying right after its start."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_runner.settings import Settings
from devtools.processes import ROOT, ChildProcess, free_port
from scripts.run_stack import MAX_RESTARTS, QUICK_EXITS, Restarts, supervise
from tests.helpers import (
    JsonLines,
    ListHandler,
    LoggedProcess,
    assert_eventually,
    coordinating_worker,
    make_settings,
    start_run,
    wait_for_state,
    wait_http,
)

pytestmark = pytest.mark.reliability

# Generous: a deadline, not a measured duration.
EXIT_DEADLINE_SECONDS = 30.0


async def test_sigterm_ends_an_open_events_stream_and_the_api_exits(
    temporal_address: str, tmp_path: Path
) -> None:
    # No worker serves the agent: the run stays PENDING, its stream would never end.
    settings = make_settings(
        temporal_address, task_queue=f"shutdown-{uuid.uuid4()}", api_port=free_port()
    )
    api = LoggedProcess.api(settings, tmp_path / "api.log")
    async with coordinating_worker(settings):
        await _sigterm_ends_the_stream(api, settings)


async def _sigterm_ends_the_stream(api: LoggedProcess, settings: Settings) -> None:
    try:
        base = f"http://127.0.0.1:{settings.api_port}"
        await wait_http(f"{base}/healthz")
        async with httpx.AsyncClient(base_url=base, timeout=15.0) as http:
            run_id = await start_run(http)
            first_event = asyncio.Event()
            # A long poll open at the same time as the stream (the same watcher feeds both).
            long_poll = asyncio.ensure_future(
                http.get(f"/agents/status/{run_id}", params={"wait": 60}, timeout=90)
            )
            stream = asyncio.ensure_future(_read_stream(http, run_id, first_event))
            try:
                await asyncio.wait_for(first_event.wait(), 30)

                api.signal(signal.SIGTERM)

                async def exited() -> None:
                    assert not api.running(), "the API is still running after SIGTERM"

                await assert_eventually(exited, timeout=EXIT_DEADLINE_SECONDS)
                # The response ended, cleanly: a complete body, not a dropped connection.
                lines = await asyncio.wait_for(stream, 10)
                # Failed before the fix: cancelled by uvicorn after its grace period, a 500.
                polled = await asyncio.wait_for(long_poll, 10)
                assert polled.status_code == 200, polled.text
                assert polled.json()["state"] == "PENDING"
            finally:
                stream.cancel()
                long_poll.cancel()
        assert "event: pending" in lines
        assert lines[-1].startswith(": "), lines
        assert "shut" in lines[-1], lines
        [closed] = api.log.events("event_streams_closed")
        assert closed["streams"] == 1
        assert closed["reason"] == "shutdown"
    finally:
        if api.running():
            api.kill()


async def _read_stream(
    http: httpx.AsyncClient, run_id: str, first_event: asyncio.Event
) -> list[str]:
    """The stream's non-blank lines until the server ends the response."""
    lines: list[str] = []
    async with http.stream(
        "GET", f"/agents/runs/{run_id}/events", timeout=httpx.Timeout(120.0, connect=10.0)
    ) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line:
                lines.append(line)
            if line.startswith("event: "):
                first_event.set()
    return lines


def _children(pid: int) -> dict[int, str]:
    """The live child processes of ``pid``: their command lines by pid."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z":
            found[int(entry.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace")
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _workers(stack: subprocess.Popen[bytes]) -> set[int]:
    return {pid for pid, args in _children(stack.pid).items() if "worker.py" in args}


def _stack_env(tmp_path: Path, api_port: int) -> dict[str, str]:
    """The environment of a stack of its own: free ports, a data dir in ``tmp_path``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AGENT_", "TEMPORAL_", "API_", "WORKER_"))
    }
    env.update(
        API_HOST="127.0.0.1",
        API_PORT=str(api_port),
        TEMPORAL_DEV_PORT=str(free_port()),
        TEMPORAL_UI_PORT=str(free_port()),
        DATA_DIR=str(tmp_path / "data"),
        LOG_FORMAT="json",
        # A run still working when its worker is killed, retried soon after.
        AGENT_DURATION_SECONDS="8",
        AGENT_HEARTBEAT_TIMEOUT_SECONDS="3",
        AGENT_RETRY_INITIAL_INTERVAL_SECONDS="0.2",
        WORKER_GRACEFUL_SHUTDOWN_SECONDS="5",
    )
    return env


@pytest.fixture
def run_stack(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """``python -m scripts.run_stack`` on free ports and a data dir of its own; its output (and
    its children's) in a log file. Killed with everything it started if a test leaves it up."""
    api_port = free_port()
    env = _stack_env(tmp_path, api_port)
    log_path = tmp_path / "stack.log"
    with log_path.open("ab") as log:
        stack = subprocess.Popen(
            [sys.executable, "-m", "scripts.run_stack"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    seen: set[int] = set()
    try:
        yield stack, f"http://127.0.0.1:{api_port}", log_path
    finally:
        if stack.poll() is None:
            seen |= set(_children(stack.pid))
            stack.send_signal(signal.SIGINT)
            try:
                stack.wait(60)
            except subprocess.TimeoutExpired:
                stack.kill()
                stack.wait()
        for pid in seen:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


async def test_make_run_restarts_a_killed_worker_and_the_run_finishes(
    run_stack: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
    stack, base, log_path = run_stack
    await wait_http(f"{base}/healthz", timeout=90)
    async with httpx.AsyncClient(base_url=base, timeout=15.0) as http:
        run_id = await start_run(http, user_id=str(uuid.uuid4()))
        await wait_for_state(http, run_id, "RUNNING", timeout=60)
        [worker] = _workers(stack)
        every_child = set(_children(stack.pid))

        os.kill(worker, signal.SIGKILL)

        async def restarted() -> int:
            assert stack.poll() is None, f"the stack exited with {stack.returncode}"
            workers = _workers(stack) - {worker}
            assert workers, "no new worker yet"
            assert len(workers) == 1, workers
            return workers.pop()

        new_worker = await assert_eventually(restarted, timeout=EXIT_DEADLINE_SECONDS)
        every_child |= set(_children(stack.pid))
        done = await wait_for_state(http, run_id, "DONE", "ERROR", timeout=120)
        assert done["state"] == "DONE", done
        assert stack.poll() is None, "the stack keeps running"
        # A new run goes through the restarted worker too.
        again = await start_run(http, user_id=str(uuid.uuid4()))
        assert (await wait_for_state(http, again, "DONE", "ERROR", timeout=90))["state"] == "DONE"

    restarts = _log_events(log_path, "stack_process_restarted")
    assert len(restarts) == 1, restarts
    assert restarts[0]["returncode"] == -signal.SIGKILL
    assert new_worker in every_child

    stack.send_signal(signal.SIGINT)

    async def stopped() -> None:
        assert stack.poll() is not None, "the stack is still running after SIGINT"

    await assert_eventually(stopped, timeout=90)
    assert stack.returncode == 0

    async def nothing_left() -> None:
        assert not [pid for pid in every_child if _alive(pid)], "children outlived the stack"

    await assert_eventually(nothing_left, timeout=10)
    assert not _log_events(log_path, "stack_process_exited")


def _log_events(path: Path, event: str) -> list[dict[str, Any]]:
    return JsonLines(path).events(event)


def test_make_run_gives_up_on_a_child_that_keeps_dying_right_after_its_start(
    tmp_path: Path, log_lines: ListHandler
) -> None:
    settings = make_settings("127.0.0.1:1")
    crashing = ChildProcess(
        [sys.executable, "-c", "raise SystemExit(3)"], settings, tmp_path / "child.log"
    )
    try:
        assert supervise([crashing], None, lambda: False) == 1
    finally:
        crashing.stop()
    restarted = log_lines.events("stack_process_restarted")
    assert [line["returncode"] for line in restarted] == [3] * (QUICK_EXITS - 1)
    [gave_up] = log_lines.events("stack_process_exited")
    assert gave_up["returncode"] == 3


class _Child:
    def restart(self) -> None:
        pass


def test_a_child_that_crashes_slowly_is_restarted_only_so_often() -> None:
    """Not only three quick exits in a row: a child dying a minute after each start is given
    up on after MAX_RESTARTS in the window (it was restarted for ever, hiding the crash)."""
    child: Any = _Child()
    restarts = Restarts([child])
    for _ in range(MAX_RESTARTS):
        restarts.started[child] -= 60  # it ran a minute before it exited
        assert restarts.may_restart(child)
        restarts.restart(child)
    restarts.started[child] -= 60
    assert not restarts.may_restart(child)


def test_make_run_prints_json_from_its_first_line(tmp_path: Path) -> None:
    """`make run`'s first line on stdout is the stack's JSON, not make's echo of a command
    (installing, when it happens, writes to stderr)."""
    env = _stack_env(tmp_path, free_port())
    stack = subprocess.Popen(
        ["make", "--no-print-directory", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert stack.stdout is not None
        first = stack.stdout.readline()
        assert json.loads(first)["event"], first
    finally:
        # Ctrl-C, as a person at the terminal would stop it: to the whole process group.
        os.killpg(stack.pid, signal.SIGINT)
        try:
            stack.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(stack.pid, signal.SIGKILL)
            stack.wait()
