"""A client instrumented with the OpenTelemetry SDK, for the end-to-end trace test.

    python e2e_client.py --endpoint http://127.0.0.1:PORT/v1/traces --url http://HOST/path

Starts a CLIENT span `"GET"` (a new, sampled trace), injects its context into the
request's headers with the SDK's W3C propagator, sends the request, records the status,
ends and exports the span, and prints one JSON line: the trace and span ids, the
traceparent it sent, the status and the answer's body.
"""

import argparse
import json
import urllib.error
import urllib.request

from opentelemetry.trace import SpanKind, Status, StatusCode

from sdk import PROPAGATOR, hex_ids, tracer_provider


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--endpoint", required=True, help="OTLP/HTTP traces URL")
    p.add_argument("--url", required=True)
    p.add_argument("--service-name", default="e2e-client")
    args = p.parse_args()
    provider = tracer_provider(args.endpoint, args.service_name)
    tracer = provider.get_tracer("pylon-tests.e2e-client")
    with tracer.start_as_current_span(
        "GET", kind=SpanKind.CLIENT, attributes={"http.request.method": "GET", "url.full": args.url}
    ) as span:
        trace_id, span_id = hex_ids(span)
        headers = {}
        PROPAGATOR.inject(headers)
        request = urllib.request.Request(args.url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                status, body = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read().decode()
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
    provider.shutdown()
    print(
        json.dumps(
            {
                "trace_id": trace_id,
                "span_id": span_id,
                "traceparent": headers.get("traceparent"),
                "status": status,
                "body": body,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
