"""What the end-to-end scripts share: an OpenTelemetry SDK tracer that exports every span
to an OTLP/HTTP endpoint as it ends (a simple, synchronous processor, so that a span is at
the receiver once the call that ended it returns), and the SDK's W3C propagator."""

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

PROPAGATOR = TraceContextTextMapPropagator()


def tracer_provider(endpoint, service_name, gzip=False, extra_resource=None):
    resource = Resource.create({"service.name": service_name, **(extra_resource or {})})
    provider = TracerProvider(resource=resource, sampler=ALWAYS_ON)
    exporter = OTLPSpanExporter(
        endpoint=endpoint,
        timeout=5,
        compression=Compression.Gzip if gzip else Compression.NoCompression,
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def hex_ids(span):
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
