#!/usr/bin/env bash
# The Autobahn|Testsuite (PyPI autobahntestsuite) for tests/autobahn.rs. It runs on
# Python 2.7 only, which Debian no longer ships; this machine's pyenv has 2.7.18. Without
# it the test says so and skips.
set -uo pipefail
export PYENV_VERSION=2.7.18
versions=$(pyenv versions --bare 2>/dev/null || true)
if ! grep -qx '2\.7\.18' <<<"$versions"; then
  echo "no Python 2.7 (pyenv 2.7.18): tests/autobahn.rs will skip"
  exit 0
fi
if python -c 'import autobahntestsuite' 2>/dev/null && [ -x "$HOME/.local/bin/wstest" ]; then
  exit 0
fi
echo "installing autobahntestsuite for Python 2.7"
python -m pip install --user --quiet --disable-pip-version-check autobahntestsuite ||
  echo "autobahntestsuite did not install: tests/autobahn.rs will skip"
