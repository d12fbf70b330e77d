#!/usr/bin/env bash
# The main job on the bundled sample: installs what it needs, runs every stage, then writes the
# report (nr report) and prints its path as the last line.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh
.venv/bin/nr run --config conf/local.yaml "$@"
# The report takes the run's --set overrides (storage.root above all), not its --stages.
report_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --set) report_args+=("$1" "$2"); shift 2 ;;
    --set=*) report_args+=("$1"); shift ;;
    *) shift ;;
  esac
done
exec .venv/bin/nr report --config conf/local.yaml "${report_args[@]+"${report_args[@]}"}"
