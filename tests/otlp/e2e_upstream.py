"""An upstream instrumented with the OpenTelemetry SDK, for the end-to-end trace test.

    python e2e_upstream.py --endpoint http://127.0.0.1:PORT/v1/traces [--port 0]

Prints its port. Each request's context is extracted from its headers with the SDK's W3C
propagator; a SERVER span `"METHOD"` is made as its child and exported before the answer
goes out. The answer is JSON: the traceparent and tracestate received, and the trace and
span ids of the span the upstream made. Stops when its standard input closes.
"""

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.trace import SpanKind

from sdk import PROPAGATOR, hex_ids, tracer_provider
from serving import serve


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    tracer = None

    def log_message(self, *args):
        pass

    def handle_one(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        carrier = {k.lower(): v for k, v in self.headers.items()}
        parent = PROPAGATOR.extract(carrier)
        with self.tracer.start_as_current_span(
            self.command,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": self.command,
                "url.path": self.path.split("?")[0],
                "http.response.status_code": 200,
            },
        ) as span:
            trace_id, span_id = hex_ids(span)
        body = json.dumps(
            {
                "traceparent": carrier.get("traceparent"),
                "tracestate": carrier.get("tracestate"),
                "trace_id": trace_id,
                "span_id": span_id,
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = handle_one


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--endpoint", required=True, help="OTLP/HTTP traces URL")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--service-name", default="e2e-upstream")
    args = p.parse_args()
    provider = tracer_provider(args.endpoint, args.service_name)
    Handler.tracer = provider.get_tracer("pylon-tests.e2e-upstream")
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    serve(server)
    provider.shutdown()


if __name__ == "__main__":
    main()
