#!/usr/bin/env bash
# The test suite: installs what it needs, then runs pytest. pytest's exit code 5
# ("no tests collected") is a failure here, not a pass.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh || exit 1
.venv/bin/python -m pytest -ra "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "error: no tests were collected" >&2
  exit 1
fi
exit "$rc"
