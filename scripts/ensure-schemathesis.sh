#!/usr/bin/env bash
# The Python side of tests/openapi.rs: a venv at target/schemathesis-venv holding the
# schemathesis of tests/schemathesis/requirements.txt, which drives the admin API from
# admin/openapi.yaml and checks every answer against it. The test finds
# target/schemathesis-venv/bin/schemathesis (or PYLON_SCHEMATHESIS) and fails, naming
# `make test`, without it.
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash scripts/ensure-venv.sh target/schemathesis-venv tests/schemathesis/requirements.txt \
  'import schemathesis, shutil, sys; sys.exit(shutil.which("schemathesis", path="target/schemathesis-venv/bin") is None)'
