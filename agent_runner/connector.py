"""Connect to Temporal, and keep trying until it works.

A process of ours starts whether or not Temporal is reachable: the API answers 503 naming the
cause (a wrong address, a certificate the server refuses, a server still starting) and the
worker waits, both logging the cause, until the connection is made. Once connected, the SDK
reconnects by itself; calls then fail with ``UNAVAILABLE`` while the server is away.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import structlog
from temporalio.client import Client, Interceptor
from temporalio.runtime import Runtime
from temporalio.service import RetryConfig

from agent_runner.connection import connect, connect_error_cause
from agent_runner.runs.errors import TemporalUnavailableError
from agent_runner.settings import Settings

logger = structlog.stdlib.get_logger(__name__)
# The first retry comes after a second, each next one twice as late, up to ten seconds.
FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 10.0


class Connector:
    def __init__(
        self,
        settings: Settings,
        *,
        runtime: Runtime,
        retry_config: RetryConfig | None = None,
        interceptors: Sequence[Interceptor] = (),
    ) -> None:
        self._settings = settings
        self._runtime = runtime
        self._retry_config = retry_config
        self._interceptors = interceptors
        self.client: Client | None = None
        self.last_error: str | None = None
        self._retrying: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._pause = FIRST_RETRY_SECONDS

    async def start(self) -> None:
        """Try once now; on failure keep trying in the background."""
        if not await self._attempt():
            self._retrying = asyncio.ensure_future(self._retry())

    async def wait_connected(self) -> Client:
        await self._connected.wait()
        assert self.client is not None
        return self.client

    def require(self) -> Client:
        """The client, or :class:`TemporalUnavailableError` naming why there is none yet."""
        if self.client is None:
            raise TemporalUnavailableError(self.last_error or "not connected to Temporal yet")
        return self.client

    async def stop(self) -> None:
        if self._retrying is not None:
            self._retrying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retrying

    async def _retry(self) -> None:
        while True:
            await asyncio.sleep(self._pause)
            self._pause = min(MAX_RETRY_SECONDS, self._pause * 2)
            if await self._attempt():
                return

    async def _attempt(self) -> bool:
        try:
            self.client = await connect(
                self._settings,
                runtime=self._runtime,
                retry_config=self._retry_config,
                interceptors=self._interceptors,
            )
        except OSError as err:  # a TLS file that cannot be read: name it
            return self._failed(f"{err.strerror}: {err.filename}", str(err))
        except RuntimeError as err:  # what the SDK raises when it cannot connect, with why
            return self._failed(connect_error_cause(err), str(err))
        self.last_error = None
        self._connected.set()
        logger.info("temporal_connected", temporal_address=self._settings.temporal_address)
        return True

    def _failed(self, cause: str, whole: str) -> bool:
        address = self._settings.temporal_address
        self.last_error = f"cannot connect to Temporal at {address}: {cause}"
        # The SDK's whole text too, when the cause is a shortened part of it.
        sdk_error = {} if cause == whole else {"sdk_error": whole}
        logger.warning(
            "temporal_unreachable",
            temporal_address=address,
            error=cause,
            retry_in_seconds=self._pause,
            **sdk_error,
        )
        return False
