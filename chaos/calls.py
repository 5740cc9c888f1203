"""The three requests a chaos client makes, each recorded as one :class:`Op` whatever happens:
its answer, or the exception in its place.

The rule: ``started`` is read before the request is sent and ``ended`` after its answer (or
failure) arrived; a request cut short because the run stopped waiting for it is recorded as
"abandoned", so no request the APIs may have acted on is missing from the history.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from chaos.history import Op, OpKind, Phase, Recorder

# Beyond a long poll's own wait: the longest an answer may take before it counts as a timeout.
REQUEST_TIMEOUT_SECONDS = 10.0


class Calls:
    def __init__(self, http: httpx.AsyncClient, urls: list[str], recorder: Recorder) -> None:
        self.http = http
        self.urls = urls
        self.recorder = recorder

    async def start(
        self, client: str, phase: Phase, api: int, body: dict[str, Any], key: str | None
    ) -> Op:
        headers = {"Idempotency-Key": key} if key is not None else {}
        return await self._call(
            client, "start", phase, api, {"body": body, "key": key},
            "POST", "/agents/run", json=body, headers=headers,
        )  # fmt: skip

    async def status(
        self, client: str, phase: Phase, api: int, run_id: str, wait: float | None = None
    ) -> Op:
        params = {"wait": f"{wait:g}"} if wait is not None else {}
        return await self._call(
            client, "status", phase, api, {"run_id": run_id, "wait": wait},
            "GET", f"/agents/status/{run_id}", params=params,
            timeout=REQUEST_TIMEOUT_SECONDS + (wait or 0.0),
        )  # fmt: skip

    async def cancel(self, client: str, phase: Phase, api: int, run_id: str) -> Op:
        return await self._call(
            client, "cancel", phase, api, {"run_id": run_id},
            "POST", f"/agents/runs/{run_id}/cancel",
        )  # fmt: skip

    async def _call(
        self,
        client: str,
        kind: OpKind,
        phase: Phase,
        api: int,
        request: dict[str, Any],
        method: str,
        path: str,
        *,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
        **options: Any,
    ) -> Op:
        started = time.time()
        status: int | None = None
        body: Any = None
        error: str | None = None
        try:
            response = await self.http.request(
                method, f"{self.urls[api]}{path}", timeout=timeout, **options
            )
            status = response.status_code
            try:
                body = response.json()
            except ValueError:
                body = response.text
        except httpx.TimeoutException:
            error = "timeout"
        except httpx.TransportError as err:
            error = f"connection ({type(err).__name__})"
        except asyncio.CancelledError:
            self._record(client, kind, phase, api, request, started, None, None, "abandoned")
            raise
        return self._record(client, kind, phase, api, request, started, status, body, error)

    def _record(
        self,
        client: str,
        kind: OpKind,
        phase: Phase,
        api: int,
        request: dict[str, Any],
        started: float,
        status: int | None,
        body: Any,
        error: str | None,
    ) -> Op:
        op = Op(
            index=self.recorder.next_op_index(),
            client=client,
            kind=kind,
            phase=phase,
            api=api,
            request=request,
            started=started,
            ended=time.time(),
            status=status,
            body=body,
            error=error,
        )
        self.recorder.op(op)
        return op
