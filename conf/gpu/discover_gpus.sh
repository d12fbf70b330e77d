#!/usr/bin/env bash
# GPU discovery for Spark executors on NVIDIA nodes: prints the node's GPU indices as
#   {"name": "gpu", "addresses": ["0", "1", ...]}
# Use it as spark.worker.resource.gpu.discoveryScript (standalone) or
# spark.executor.resource.gpu.discoveryScript (YARN, Kubernetes). It honors
# CUDA_VISIBLE_DEVICES when the node restricts the visible GPUs (numeric indices only).
set -euo pipefail
if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "discover_gpus.sh: nvidia-smi not found; is the NVIDIA driver installed on this node?" >&2
  exit 1
fi
indices=$(nvidia-smi --query-gpu=index --format=csv,noheader,nounits | tr -d ' ')
if [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then
  visible=",${CUDA_VISIBLE_DEVICES// /},"
  indices=$(for i in $indices; do [[ "$visible" == *",$i,"* ]] && echo "$i"; done || true)
fi
addresses=""
for i in $indices; do
  addresses+="${addresses:+,}\"$i\""
done
printf '{"name": "gpu", "addresses": [%s]}\n' "$addresses"
