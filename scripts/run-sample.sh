#!/usr/bin/env bash
# The main job on the bundled sample: installs what it needs, runs every stage, then writes the
# report in the same Spark session (nr run --report) and prints its path as the last line.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh
exec .venv/bin/nr run --config conf/local.yaml --report "$@"
