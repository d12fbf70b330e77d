"""Stage-level GPU scheduling for LLM stages (DESIGN §6); the one place Spark versions differ.

Spark >= 4.0 takes a ResourceProfile in ``mapInPandas(..., profile=)``; 3.5 goes through
``rdd.withResources``. Local mode and cluster managers without stage-level scheduling fall
back to the cluster-wide ``spark.task.resource.gpu.amount``.
"""
from __future__ import annotations

import logging
from typing import Callable, Optional

from pyspark.sql import DataFrame

from jobs.common.spark import is_local, spark_version

log = logging.getLogger(__name__)


def gpu_profile(spark, gpus_per_task: float, cpus_per_task: Optional[int] = None):
    if gpus_per_task <= 0:
        return None
    if is_local(spark):
        log.info("local mode has no stage-level scheduling: GPUs come from spark.task.resource.gpu.amount")
        return None
    from pyspark.resource import ResourceProfileBuilder, TaskResourceRequests

    req = TaskResourceRequests().resource("gpu", gpus_per_task)
    if cpus_per_task:
        req = req.cpus(cpus_per_task)
    return ResourceProfileBuilder().require(req).build


def map_in_pandas(df: DataFrame, fn: Callable, schema, gpus_per_task: float = 0,
                  cpus_per_task: Optional[int] = None) -> DataFrame:
    spark = df.sparkSession
    profile = gpu_profile(spark, gpus_per_task, cpus_per_task)
    if profile is None:
        return df.mapInPandas(fn, schema)
    if spark_version(spark) >= (4, 0):
        try:
            return df.mapInPandas(fn, schema, profile=profile)
        except Exception as e:  # e.g. a cluster manager without stage-level scheduling
            log.warning("stage-level GPU profile refused (%s); using spark.task.resource.gpu.amount", e)
            return df.mapInPandas(fn, schema)
    # Spark 3.5: run the same function over the RDD with the profile attached.
    from pyspark.sql.pandas.types import to_arrow_schema  # noqa: F401  (same Arrow path as mapInPandas)

    mapped = df.mapInPandas(fn, schema)
    try:
        return spark.createDataFrame(mapped.rdd.withResources(profile), mapped.schema)
    except Exception as e:
        log.warning("rdd.withResources refused (%s); using spark.task.resource.gpu.amount", e)
        return mapped
