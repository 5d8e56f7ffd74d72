#!/usr/bin/env bash
# The test command (README, and .ci/run calls exactly this): set up what the tests need on
# a fresh machine, then lint, type-check and run the suite. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[all,test]'

.venv/bin/ruff check daemon discovery config tests
.venv/bin/mypy
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "check.sh: pytest collected no tests; that is a failure" >&2
fi
exit "$status"
