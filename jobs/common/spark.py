"""The one SparkSession factory, and the places where Spark versions differ.

Under spark-submit, on Databricks, or in a notebook that already has a session, the
session we are given is used as it is. Only a local run builds its own, sized for the
machine.
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
from typing import Optional

from pyspark.sql import SparkSession

from jobs.common.config import SparkConfig

log = logging.getLogger(__name__)


def _launched_by_spark() -> bool:
    # spark-submit starts the JVM first and hands Python the gateway; Databricks sets its runtime version.
    return "PYSPARK_GATEWAY_PORT" in os.environ or "DATABRICKS_RUNTIME_VERSION" in os.environ


def get_spark(cfg: Optional[SparkConfig] = None, checkpoint_dir: Optional[str] = None) -> SparkSession:
    cfg = cfg or SparkConfig()
    active = SparkSession.getActiveSession()
    if active is None and _launched_by_spark():
        active = SparkSession.builder.appName(cfg.app_name).getOrCreate()
    if active is not None:
        spark = active
    else:
        spark = _build_local(cfg)
    if checkpoint_dir and not spark.sparkContext.getCheckpointDir():
        spark.sparkContext.setCheckpointDir(checkpoint_dir)
    return spark


def _build_local(cfg: SparkConfig) -> SparkSession:
    cores = os.cpu_count() or 2
    # Executors' Python must be this interpreter (the virtual environment), not whatever `python3` is on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    scratch = tempfile.gettempdir()
    b = (
        SparkSession.builder.master(cfg.master or f"local[{cores}]")
        .appName(cfg.app_name)
        .config("spark.driver.memory", cfg.driver_memory)
        .config("spark.sql.shuffle.partitions", str(cfg.shuffle_partitions))
        .config("spark.default.parallelism", str(max(cores, 2)))
        .config("spark.ui.enabled", str(cfg.ui_enabled).lower())
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.session.timeZone", "UTC")
        # Delta readers expect INT64 timestamps; Spark's default INT96 is legacy.
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.python.worker.reuse", "true")
        # PySpark 4 records the Python call site of every DataFrame and Column call for error
        # messages: about five JVM round trips per call, half of an LLM chunk's plan-building
        # time (bench_stage_scale). Errors still name the failing expression.
        .config("spark.python.sql.dataFrameDebugging.enabled", "false")
        # Spark's daemon minus two per-task costs of its workers (the docstring says which)
        .config("spark.python.daemon.module", "udfs.worker_daemon")
        .config("spark.sql.warehouse.dir", os.path.join(scratch, "nr-spark-warehouse"))
        .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={scratch} {cfg.local_java_options}".strip())
        .config("spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs", "false")
    )
    for k, v in cfg.conf.items():
        b = b.config(k, v)
    spark = b.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def is_local(spark: SparkSession) -> bool:
    return spark.sparkContext.master.startswith("local")


def has_delta_extension(spark: SparkSession) -> bool:
    exts = spark.conf.get("spark.sql.extensions", "") or ""
    return "io.delta.sql.DeltaSparkSessionExtension" in exts
