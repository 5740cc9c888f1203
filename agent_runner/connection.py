"""One Temporal client per process, configured from :class:`Settings`."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from datetime import timedelta

from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client, Interceptor
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    MetricBuffer,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)
from temporalio.service import RetryConfig, RPCError, RPCStatusCode, TLSConfig

from agent_runner import search_attributes
from agent_runner.logs import CORE_LOGGER_NAME
from agent_runner.settings import Settings


def create_runtime(
    prometheus_bind_address: str | None = None, metric_buffer: MetricBuffer | None = None
) -> Runtime:
    """A runtime whose SDK-core logs go through Python logging (so they come out as JSON),
    and whose SDK metrics are served to Prometheus, or kept for the process to read."""
    metrics: PrometheusConfig | MetricBuffer | None = metric_buffer
    if prometheus_bind_address:
        metrics = PrometheusConfig(bind_address=prometheus_bind_address)
    return Runtime(
        telemetry=TelemetryConfig(
            logging=LoggingConfig(
                filter=TelemetryFilter(core_level="WARN", other_level="WARN"),
                forwarding=LogForwardingConfig(logger=logging.getLogger(CORE_LOGGER_NAME)),
            ),
            metrics=metrics,
        )
    )


def tls_config(settings: Settings) -> TLSConfig | bool:
    paths = (
        settings.temporal_tls_ca_path,
        settings.temporal_tls_cert_path,
        settings.temporal_tls_key_path,
    )
    if any(paths):
        ca, cert, key = (path.read_bytes() if path else None for path in paths)
        return TLSConfig(server_root_ca_cert=ca, client_cert=cert, client_private_key=key)
    # An API key (Temporal Cloud) implies TLS.
    return settings.temporal_tls or settings.temporal_api_key is not None


def api_retry_config(settings: Settings) -> RetryConfig:
    """Give up quickly: an HTTP caller wants a 503 within seconds, not a 10 s hang."""
    budget_ms = int(settings.temporal_rpc_timeout_seconds * 1000)
    return RetryConfig(
        initial_interval_millis=100,
        max_interval_millis=max(100, budget_ms // 4),
        max_elapsed_time_millis=budget_ms,
        max_retries=3,
    )


async def connect(
    settings: Settings,
    *,
    runtime: Runtime,
    retry_config: RetryConfig | None = None,
    interceptors: Sequence[Interceptor] = (),
) -> Client:
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        api_key=(
            settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
        ),
        tls=tls_config(settings),
        retry_config=retry_config,
        connect_timeout=timedelta(seconds=settings.temporal_rpc_timeout_seconds),
        runtime=runtime,
        interceptors=interceptors,
    )


# A failed connect is a RuntimeError whose text is Rust's debug output of the cause: tonic's
# gRPC status (with every response header) or a rustls error. These find the part to act on.
_GRPC_STATUS = re.compile(r'Status \{ code: (\w+), message: "((?:[^"\\]|\\.)*)"')
_TLS_ERROR = re.compile(r"\b(InvalidCertificate|AlertReceived)\((\w+)\)")
_TLS_HINTS = {
    "UnknownIssuer": (
        "the server's certificate is signed by an unknown authority (is TEMPORAL_TLS_CA_PATH "
        "its CA?)"
    ),
    "CertificateRequired": (
        "the server requires a client certificate (TEMPORAL_TLS_CERT_PATH, TEMPORAL_TLS_KEY_PATH)"
    ),
}


def connect_error_cause(err: RuntimeError) -> str:
    """The cause of a failed :func:`connect` in one short line, e.g. ``UNAUTHENTICATED: client
    certificate required``; the SDK's whole text when it is none of the known shapes."""
    text = str(err)
    if status := _GRPC_STATUS.search(text):
        code = re.sub(r"(?<!^)(?=[A-Z])", "_", status[1]).upper()
        message = status[2].replace('\\"', '"')  # Rust escapes quotes in debug output
        return f"{code}: {message}"
    if tls := _TLS_ERROR.search(text):
        kind, reason = tls.groups()
        return f"TLS handshake failed: {_TLS_HINTS.get(reason, kind)} [{kind}({reason})]"
    return text


async def readiness_problems(client: Client, rpc_timeout: timedelta) -> list[str]:
    """What stops this service from working against its Temporal namespace; empty when ready.

    Raises :class:`RPCError` when the server cannot be reached at all.
    """
    try:
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=client.namespace), timeout=rpc_timeout
        )
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return [f"namespace {client.namespace!r} does not exist"]
        raise
    try:
        registered = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace), timeout=rpc_timeout
        )
    except RPCError as err:
        # Some hosted namespaces do not let a worker identity list them; nothing to check then.
        if err.status == RPCStatusCode.PERMISSION_DENIED:
            return []
        raise
    missing = [
        key.name for key in search_attributes.ALL if key.name not in registered.custom_attributes
    ]
    if missing:
        return [f"search attributes not registered: {', '.join(missing)} (see the README)"]
    return []
