#!/bin/bash
# EMR bootstrap action: install the pipeline on every node, with the versions setup.py pins.
#   --bootstrap-actions Path=s3://BUCKET/conf/emr-bootstrap.sh,Args=[s3://BUCKET/wheels/natural_reasoning_spark-0.1.0-py3-none-any.whl]
# EMR 7.x brings Spark 3.5 (pyspark is not installed again) and Python 3.9+; numpy stays on the
# 1.26 line the AMI ships. tests/test_cluster_defs.py checks every pin below against setup.py.
set -euo pipefail
WHEEL=${1:?usage: emr-bootstrap.sh s3://.../natural_reasoning_spark-0.1.0-py3-none-any.whl}
PY=${NR_PYTHON:-python3}
aws s3 cp "$WHEEL" /tmp/
sudo "$PY" -m pip install --quiet \
  "numpy>=1.26,<2.5" \
  "pandas>=2.2,<3" \
  "pyarrow>=16" \
  "deltalake>=1.1,<2" \
  "boto3>=1.34" \
  "vllm>=0.11" \
  "/tmp/$(basename "$WHEEL")[aws,gpu]"
