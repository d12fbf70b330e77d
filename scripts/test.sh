#!/usr/bin/env bash
# The test suite: installs what it needs, then runs pytest. pytest's exit code 5
# ("no tests collected") is a failure here, not a pass.
#   bash scripts/test.sh [PYTEST ARGS]          everything (about 45 minutes on 2 cores)
#   bash scripts/test.sh --fast [PYTEST ARGS]   no Spark, no real model, no GPU (under 3 minutes)
# The spark and slow markers come from fixture use (tests/conftest.py), not by hand.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh || exit 1
if [ "${1:-}" = "--fast" ]; then
  shift
  set -- -m "not spark and not slow and not gpu" "$@"
fi
.venv/bin/python -m pytest -ra "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "error: no tests were collected" >&2
  exit 1
fi
exit "$rc"
