#!/usr/bin/env bash
# The main job on the bundled sample: installs what it needs, then runs every stage.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh
exec .venv/bin/nr run --config conf/local.yaml "$@"
