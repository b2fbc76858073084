#!/usr/bin/env bash
# A Python venv for a test's tools: `scripts/ensure-venv.sh VENV REQUIREMENTS CHECK` makes
# VENV from Debian's python3 and installs REQUIREMENTS (a pip requirements file, versions
# pinned) from PyPI, then runs the Python statement CHECK in it. A venv keeps pip away from
# Debian's system Python (PEP 668). It is made again when REQUIREMENTS changes; otherwise,
# while CHECK passes, it returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$1
requirements=$2
check=$3
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] &&
  "$venv/bin/python" -c "$check" 2>/dev/null; then
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
"$venv/bin/python" -c "$check"
echo "$want" >"$stamp"
echo "$venv ready"
