#!/usr/bin/env bash
# h2spec for tests/h2spec.rs. No package registry carries it: the build in
# ../shared/tools/h2spec (see ../shared/tools/README.md) is what the tests run. This says
# whether it is there and runs; without it the test says so and skips.
set -u
h2spec="$(dirname "$0")/../../shared/tools/h2spec/h2spec"
if [ -x "$h2spec" ] && "$h2spec" --version >/dev/null 2>&1; then
  exit 0
fi
echo "no runnable h2spec at ../shared/tools/h2spec/h2spec (no registry carries it): tests/h2spec.rs will skip"
