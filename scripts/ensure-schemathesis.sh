#!/usr/bin/env bash
# The Python side of tests/openapi.rs: a venv at target/schemathesis-venv holding the
# schemathesis of tests/schemathesis/requirements.txt, which drives the admin API from
# admin/openapi.yaml and checks every answer against it. A venv keeps pip away from
# Debian's system Python (PEP 668). Recreated when the requirements change; otherwise it
# returns at once. The test finds target/schemathesis-venv/bin/schemathesis (or
# PYLON_SCHEMATHESIS) and fails, naming `make test`, without it.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/schemathesis-venv
requirements=tests/schemathesis/requirements.txt
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [ -x "$venv/bin/schemathesis" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] &&
  "$venv/bin/python" -c 'import schemathesis' 2>/dev/null; then
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
"$venv/bin/schemathesis" --version
echo "$want" >"$stamp"
echo "$venv ready"
