"""An OTLP/HTTP trace receiver for the tests: what a collector does with `POST /v1/traces`,
decoded with the official protobuf definitions (PyPI's opentelemetry-proto).

    python receiver.py [--port 0] [--out spans.jsonl] [--delay SECONDS] [--status CODE]

Prints the port it listens on (one line, then flushes), so `--port 0` takes an ephemeral
one. Every span becomes one JSON object: ids as lower-case hex (an absent parent is ""),
`kind` and `status.code` by name (SERVER, CLIENT, ...; UNSET, OK, ERROR), attributes and
resource attributes as flat dicts with typed values (int, float, bool, str, list, dict,
bytes as hex). `GET /spans` serves them all as a JSON list (`?trace_id=` keeps one trace),
`GET /stats` what arrived (`arrived`: POSTs read, counted before any delay; `posts`:
POSTs answered; `spans`; `rejected`: bodies refused and why; `encodings`: POSTs taken per
Content-Encoding); `--out` also appends
each span as a line to a file. `--delay` holds every answer that long (a slow collector),
`--status` answers that status instead of 200 (a failing one). With `--exit-on-stdin-eof`
the process ends when its standard input closes, so a test that dies leaves no receiver
behind.
"""

import argparse
import gzip
import json
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from serving import serve

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status


def any_value(v):
    """An OTLP AnyValue as the JSON value it holds, keeping its type."""
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return attributes(v.kvlist_value.values)
    if which == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, which)


def attributes(kvs):
    return {kv.key: any_value(kv.value) for kv in kvs}


def enum_name(enum, value, prefix):
    try:
        return enum.Name(value).removeprefix(prefix)
    except ValueError:
        return str(value)


def flatten(request):
    """Every span of an ExportTraceServiceRequest as a flat dict."""
    for rs in request.resource_spans:
        resource = attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            scope = {"name": ss.scope.name, "version": ss.scope.version}
            for s in ss.spans:
                yield {
                    "trace_id": s.trace_id.hex(),
                    "span_id": s.span_id.hex(),
                    "parent_span_id": s.parent_span_id.hex(),
                    "trace_state": s.trace_state,
                    "flags": s.flags,
                    "name": s.name,
                    "kind": enum_name(Span.SpanKind, s.kind, "SPAN_KIND_"),
                    "start_ns": s.start_time_unix_nano,
                    "end_ns": s.end_time_unix_nano,
                    "attributes": attributes(s.attributes),
                    "events": [
                        {
                            "name": e.name,
                            "time_ns": e.time_unix_nano,
                            "attributes": attributes(e.attributes),
                        }
                        for e in s.events
                    ],
                    "links": [
                        {
                            "trace_id": link.trace_id.hex(),
                            "span_id": link.span_id.hex(),
                            "attributes": attributes(link.attributes),
                        }
                        for link in s.links
                    ],
                    "status": {
                        "code": enum_name(Status.StatusCode, s.status.code, "STATUS_CODE_"),
                        "message": s.status.message,
                    },
                    "dropped_attributes_count": s.dropped_attributes_count,
                    "resource": resource,
                    "scope": scope,
                }


class Store:
    def __init__(self, out):
        self.lock = threading.Lock()
        self.spans = []
        self.posts = 0
        self.arrived = 0
        self.rejected = []
        self.encodings = {}
        self.out = open(out, "a", encoding="utf-8") if out else None

    def add(self, spans, encoding):
        with self.lock:
            self.posts += 1
            self.encodings[encoding] = self.encodings.get(encoding, 0) + 1
            self.spans.extend(spans)
            if self.out:
                for s in spans:
                    self.out.write(json.dumps(s) + "\n")
                self.out.flush()

    def arrive(self):
        with self.lock:
            self.arrived += 1

    def reject(self, why):
        with self.lock:
            self.posts += 1
            self.rejected.append(why)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    store = None
    delay = 0.0
    status = 200

    def log_message(self, *args):
        pass

    def answer(self, status, body, content_type):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def answer_json(self, value, status=200):
        self.answer(status, json.dumps(value).encode(), "application/json")

    def do_GET(self):
        url = urlparse(self.path)
        with self.store.lock:
            spans = list(self.store.spans)
            stats = {
                "arrived": self.store.arrived,
                "posts": self.store.posts,
                "spans": len(self.store.spans),
                "rejected": list(self.store.rejected),
                "encodings": dict(self.store.encodings),
            }
        if url.path == "/spans":
            wanted = parse_qs(url.query).get("trace_id")
            if wanted:
                spans = [s for s in spans if s["trace_id"] in wanted]
            self.answer_json(spans)
        elif url.path == "/stats":
            self.answer_json(stats)
        else:
            self.answer_json({"error": "not found"}, 404)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self.store.arrive()
        if self.delay:
            time.sleep(self.delay)
        if urlparse(self.path).path != "/v1/traces":
            self.store.reject(f"POST {self.path}: only /v1/traces is served")
            return self.answer_json({"error": "not found"}, 404)
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if content_type != "application/x-protobuf":
            self.store.reject(f"Content-Type {content_type!r}, not application/x-protobuf")
            return self.answer_json({"error": "unsupported media type"}, 415)
        encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            elif encoding != "identity":
                raise ValueError(f"Content-Encoding {encoding!r}")
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            spans = list(flatten(request))
        except Exception as e:  # a body that does not decode is the sender's bug: say so
            self.store.reject(f"undecodable body ({len(body)} bytes): {e!r}")
            return self.answer_json({"error": "bad request"}, 400)
        if self.status != 200:
            self.store.reject(f"answered {self.status} as told (--status)")
            return self.answer(self.status, b"", "application/x-protobuf")
        self.store.add(spans, encoding)
        response = ExportTraceServiceResponse().SerializeToString()
        self.answer(200, response, "application/x-protobuf")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--out", help="append each span as a JSON line to this file")
    p.add_argument("--delay", type=float, default=0.0, help="seconds to hold every POST's answer")
    p.add_argument("--status", type=int, default=200, help="answer POSTs with this status")
    p.add_argument("--exit-on-stdin-eof", action="store_true", help="stop when stdin closes")
    args = p.parse_args()

    Handler.store = Store(args.out)
    Handler.delay = args.delay
    Handler.status = args.status
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    serve(server, args.exit_on_stdin_eof)


if __name__ == "__main__":
    main()
