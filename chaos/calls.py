"""The requests a chaos actor makes (a start, a status read, a cancel, a change of the limits,
a pause or a resume), each recorded as one :class:`Op` whatever happens: its answer, or the
exception in its place.

The rule: ``started`` is read before the request is sent and ``ended`` after its answer (or
failure) arrived; a request cut short because the run stopped waiting for it is recorded as
"abandoned", so no request the APIs may have acted on is missing from the history.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx

from chaos.history import Op, OpKind, Phase, Recorder

# Beyond a long poll's own wait: the longest an answer may take before it counts as a timeout.
REQUEST_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Asked:
    """Who asks what of which API, as the history records it."""

    client: str
    kind: OpKind
    phase: Phase
    api: int
    request: dict[str, Any]


class Calls:
    def __init__(self, http: httpx.AsyncClient, urls: list[str], recorder: Recorder) -> None:
        self.http = http
        self.urls = urls
        self.recorder = recorder

    async def start(
        self, client: str, phase: Phase, api: int, body: dict[str, Any], key: str | None
    ) -> Op:
        asked = Asked(client, "start", phase, api, {"body": body, "key": key})
        headers = {"Idempotency-Key": key} if key is not None else {}
        return await self._call(asked, "POST", "/agents/run", json=body, headers=headers)

    async def status(
        self, client: str, phase: Phase, api: int, run_id: str, wait: float | None = None
    ) -> Op:
        asked = Asked(client, "status", phase, api, {"run_id": run_id, "wait": wait})
        params = {"wait": f"{wait:g}"} if wait is not None else {}
        timeout = REQUEST_TIMEOUT_SECONDS + (wait or 0.0)
        path = f"/agents/status/{run_id}"
        return await self._call(asked, "GET", path, params=params, timeout=timeout)

    async def cancel(self, client: str, phase: Phase, api: int, run_id: str) -> Op:
        asked = Asked(client, "cancel", phase, api, {"run_id": run_id})
        return await self._call(asked, "POST", f"/agents/runs/{run_id}/cancel")

    async def limits(self, client: str, phase: Phase, api: int, body: dict[str, Any]) -> Op:
        """``PUT /agents/limits`` (N, the queue's size and order); it answers once every
        coordinator follows it."""
        asked = Asked(client, "limits", phase, api, {"body": body})
        return await self._call(asked, "PUT", "/agents/limits", json=body)

    async def pause(
        self, client: str, phase: Phase, api: int, scope: str, label: str, *, paused: bool
    ) -> Op:
        """Pause (or resume) the scope the checker calls ``scope`` (``label`` in the URL)."""
        kind: OpKind = "pause" if paused else "resume"
        asked = Asked(client, kind, phase, api, {"scope": scope, "label": label})
        return await self._call(asked, "POST", f"/agents/scopes/{label}/{kind}")

    async def _call(
        self,
        asked: Asked,
        method: str,
        path: str,
        *,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
        **options: Any,
    ) -> Op:
        started = time.time()
        url = f"{self.urls[asked.api]}{path}"
        try:
            response = await self.http.request(method, url, timeout=timeout, **options)
        except httpx.TimeoutException:
            return self._record(asked, started, error="timeout")
        except httpx.TransportError as err:
            return self._record(asked, started, error=f"connection ({type(err).__name__})")
        except asyncio.CancelledError:
            self._record(asked, started, error="abandoned")
            raise
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        return self._record(asked, started, status=response.status_code, body=body)

    def _record(
        self,
        asked: Asked,
        started: float,
        *,
        status: int | None = None,
        body: Any = None,
        error: str | None = None,
    ) -> Op:
        op = Op(
            index=self.recorder.next_op_index(),
            client=asked.client,
            kind=asked.kind,
            phase=asked.phase,
            api=asked.api,
            request=asked.request,
            started=started,
            ended=time.time(),
            status=status,
            body=body,
            error=error,
        )
        self.recorder.op(op)
        return op
