"""Optional OpenTelemetry tracing of runs, through the Temporal SDK's own interceptor.

Off unless OTEL_EXPORTER_OTLP_ENDPOINT is set. Then the API's starts and the worker's
workflow and activity executions become spans of one trace per run, exported over OTLP/HTTP
(the standard OTEL_* variables, such as OTEL_BSP_SCHEDULE_DELAY, apply).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from temporalio.client import Interceptor
from temporalio.contrib.opentelemetry import TracingInterceptor

from agent_runner.settings import Settings


def tracing_interceptors(
    settings: Settings, role: str
) -> tuple[Sequence[Interceptor], Callable[[], None]]:
    """Client interceptors (which the worker inherits) and a function that flushes the spans;
    no interceptors and a no-op when tracing is off."""
    endpoint = settings.otel_exporter_otlp_endpoint
    if not endpoint:
        return [], lambda: None
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: f"{settings.otel_service_name}-{role}"})
    )
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces"))
    )
    # Our own provider, not the global one: nothing else in the process is affected.
    return [TracingInterceptor(provider.get_tracer("agent-runner"))], provider.shutdown
