#!/usr/bin/env bash
# The Python side of tests/tracing.rs: a venv at target/otel-venv holding the OpenTelemetry
# packages of tests/otlp/requirements.txt (the proto definitions the OTLP receiver decodes
# with, the SDK and its OTLP/HTTP exporter for the end-to-end client and upstream). The
# tests find the venv's python at target/otel-venv/bin/python (or PYLON_OTEL_PYTHON) and
# fail, naming this script, without it.
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash scripts/ensure-venv.sh target/otel-venv tests/otlp/requirements.txt \
  'import opentelemetry.proto.collector.trace.v1.trace_service_pb2, opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http'
