#!/usr/bin/env bash
# The Python side of tests/cache.rs's REDbot check: a venv at target/redbot-venv holding the
# REDbot of tests/redbot/requirements.txt (it needs Python >= 3.11), which fetches a cached
# route and reports what is wrong with its caching headers. The test finds
# target/redbot-venv/bin/redbot (or PYLON_REDBOT) and fails, naming `make test`, without it.
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash scripts/ensure-venv.sh target/redbot-venv tests/redbot/requirements.txt \
  'import redbot, shutil, sys; sys.exit(shutil.which("redbot", path="target/redbot-venv/bin") is None)'
