#!/usr/bin/env bash
# Spark 3.5 (EMR 7.x) in its own environment: builds .venv-spark35 with pyspark 3.5 and the
# numpy/pandas/pyarrow line EMR 7 ships (numpy 1.x), then runs on it the tests that exercise
# the Spark API surface: the scripted end-to-end pipeline, dedup, decontamination, the Delta
# bridge, S3 through a local S3 server, and the fake-GPU standalone cluster (rdd.withResources).
#
#   bash scripts/test-spark35.sh [extra pytest args]
#
# Versions can be overridden: NR_SPARK35_PYSPARK, NR_SPARK35_NUMPY, NR_SPARK35_PANDAS,
# NR_SPARK35_PYARROW. pytest's exit code 5 ("no tests collected") is a failure here.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv-spark35
PYSPARK=${NR_SPARK35_PYSPARK:-3.5.5}   # EMR 7.9-7.10 ship Spark 3.5.5
NUMPY=${NR_SPARK35_NUMPY:-1.26.4}
PANDAS=${NR_SPARK35_PANDAS:-2.2.3}
# deltalake's Arrow interop needs pyarrow >= 21 (its `pyarrow` extra); older pyarrow fails there, not in Spark.
PYARROW=${NR_SPARK35_PYARROW:-21.0.0}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV" || exit 1
constraints="$VENV/constraints.txt"
printf 'pyspark==%s\nnumpy==%s\npandas==%s\npyarrow==%s\n' "$PYSPARK" "$NUMPY" "$PANDAS" "$PYARROW" > "$constraints"
stamp="$VENV/.nr-installed-$(cat setup.py "$constraints" | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "installing the project into $VENV (log: $VENV/install.log) ..."
  log=$VENV/install.log
  : > "$log"
  pipi() { "$VENV/bin/python" -m pip install "$@" >>"$log" 2>&1 || { tail -40 "$log"; echo "pip install $* failed" >&2; exit 1; }; }
  # No LLM extras: these tests run the scripted engine. The end-to-end pipeline's embed stage needs
  # sentence-transformers, hence torch, pinned first to the CPU build (unpinned, it pulls CUDA wheels).
  pipi -q -c "$constraints" "torch==2.13.0" "pyspark==$PYSPARK" "numpy==$NUMPY" "pandas==$PANDAS" "pyarrow==$PYARROW"
  pipi -q -c "$constraints" -e ".[dev,aws,embed]"
  "$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec >>"$log" 2>&1 || true
  pipi -q --no-deps "lm-eval==0.4.13"   # the janitor module the decontamination tests compare against
  touch "$stamp"
fi
"$VENV/bin/python" - <<'PY' || exit 1
import numpy, pandas, pyarrow, pyspark
print(f"spark35 environment: pyspark {pyspark.__version__}, numpy {numpy.__version__}, "
      f"pandas {pandas.__version__}, pyarrow {pyarrow.__version__}")
assert pyspark.__version__.startswith("3.5."), pyspark.__version__
PY
# Spark's Python workers must use this environment's interpreter, not the one on PATH.
export PYSPARK_PYTHON="$PWD/$VENV/bin/python" PYSPARK_DRIVER_PYTHON="$PWD/$VENV/bin/python"
"$VENV/bin/python" -m pytest -ra -p no:cacheprovider \
  tests/test_pipeline_e2e.py tests/test_dedup.py tests/test_decontaminate.py tests/test_storage.py \
  tests/test_s3.py "tests/test_gpu_scheduling.py::test_spark3_rdd_with_resources_path_gives_each_task_both_gpus" \
  "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "error: no tests were collected" >&2
  exit 1
fi
exit "$rc"
