#!/usr/bin/env bash
# The Python side of tests/tracing.rs: a venv at target/otel-venv holding the OpenTelemetry
# packages of tests/otlp/requirements.txt (the proto definitions the OTLP receiver decodes
# with, the SDK and its OTLP/HTTP exporter for the end-to-end client and upstream). A venv
# keeps pip away from Debian's system Python (PEP 668). Recreated when the requirements
# change; otherwise it returns at once. The tests find the venv's python at
# target/otel-venv/bin/python (or PYLON_OTEL_PYTHON) and fail, naming this script, without it.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/otel-venv
requirements=tests/otlp/requirements.txt
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] &&
  "$venv/bin/python" -c 'import opentelemetry.proto.collector.trace.v1.trace_service_pb2, opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http' 2>/dev/null; then
  exit 0
fi
# Debian's python3 makes venvs only with python3-venv (it brings ensurepip).
bash scripts/ensure-packages.sh python3 python3-venv
base=/usr/bin/python3
[ -x "$base" ] || base=$(command -v python3)
echo "creating $venv with $("$base" --version) and the packages of $requirements"
rm -rf "$venv"
"$base" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$requirements"
"$venv/bin/python" -c 'import opentelemetry.proto.collector.trace.v1.trace_service_pb2, opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http'
echo "$want" >"$stamp"
echo "$venv ready: $("$venv/bin/python" -m pip list --disable-pip-version-check 2>/dev/null | grep -c '^opentelemetry') OpenTelemetry packages"
