"""Spans of every shape, exported by the OpenTelemetry SDK's OTLP/HTTP exporter: the check
that the receiver decodes what a real exporter sends.

    python sdk_emit.py --endpoint http://127.0.0.1:PORT/v1/traces

Exports, in one trace, a SERVER span `"GET /probe"` (attributes of each type, an event with
attributes, status ERROR with a message, resource attributes) and its CLIENT child
`"GET"`, uncompressed; then a span `"gzip"` of a second trace through a gzip-compressing
exporter. Prints one JSON line with the ids it made, for the caller to look for.
"""

import argparse
import json

from opentelemetry.trace import SpanKind, Status, StatusCode

from sdk import hex_ids, tracer_provider


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--endpoint", required=True)
    args = p.parse_args()

    provider = tracer_provider(
        args.endpoint, "sdk-probe", extra_resource={"deployment.environment": "probe"}
    )
    tracer = provider.get_tracer("pylon-tests.sdk-emit", "1.2.3")
    with tracer.start_as_current_span("GET /probe", kind=SpanKind.SERVER) as server:
        server.set_attribute("http.request.method", "GET")
        server.set_attribute("http.response.status_code", 503)
        server.set_attribute("ratio", 0.25)
        server.set_attribute("cached", False)
        server.set_attribute("tags", ["a", "b"])
        server.add_event("rate_limited", {"limit": 20, "policy": "default"})
        server.set_status(Status(StatusCode.ERROR, "upstream down"))
        with tracer.start_as_current_span("GET", kind=SpanKind.CLIENT) as client:
            client.set_attribute("server.port", 7002)
            client.set_attribute("error.type", "connection_refused")
    trace_id, server_id = hex_ids(server)
    _, client_id = hex_ids(client)
    provider.shutdown()

    zipped = tracer_provider(args.endpoint, "sdk-probe-gzip", gzip=True)
    with zipped.get_tracer("pylon-tests.sdk-emit").start_as_current_span("gzip") as g:
        gzip_trace_id, gzip_id = hex_ids(g)
    zipped.shutdown()

    print(
        json.dumps(
            {
                "trace_id": trace_id,
                "server_span_id": server_id,
                "client_span_id": client_id,
                "gzip_trace_id": gzip_trace_id,
                "gzip_span_id": gzip_id,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
