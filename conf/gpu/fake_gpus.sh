#!/usr/bin/env bash
# Fake GPU discovery for tests (DESIGN §11): reports NR_FAKE_GPUS addresses (default 2),
# "0" .. "N-1", in the JSON form Spark's resource discovery expects. Nothing is probed.
set -euo pipefail
n="${NR_FAKE_GPUS:-2}"
addresses=""
for ((i = 0; i < n; i++)); do
  addresses+="${addresses:+,}\"$i\""
done
printf '{"name": "gpu", "addresses": [%s]}\n' "$addresses"
