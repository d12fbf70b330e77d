"""Stage-level GPU scheduling for LLM stages (ARCHITECTURE.md §6): the one place Spark versions differ.

An LLM stage asks for ``gpus_per_task`` GPUs per task with a ResourceProfile that carries
only task requests (``TaskResourceRequests().resource("gpu", n)``): the executors the
cluster already has are reused, and Spark gives each task that many GPU addresses.

- Spark >= 4.0: ``df.mapInPandas(fn, schema, profile=profile)``.
- Spark 3.x: ``mapInPandas`` then ``rdd.withResources(profile)``; the profile applies to the
  stage that runs the Python function, and the rows come back as a DataFrame.
- Local mode and cluster managers without task-level profiles: plain ``mapInPandas``; the
  GPUs per task are then the cluster-wide ``spark.task.resource.gpu.amount``, and a log line
  says so.

Where task-only profiles work: with dynamic allocation on, on standalone, YARN and
Kubernetes (Spark asks for executors shaped like the default ones); with it off, on
standalone from Spark 3.4 and on YARN and Kubernetes from 3.5.1. Databricks clusters are
standalone underneath. Anywhere else Spark would refuse the job when it starts, so the
profile is not attached at all.
"""
from __future__ import annotations

import logging
import re
from typing import Callable, Literal, Optional

from pyspark.sql import DataFrame

log = logging.getLogger(__name__)

ProfileApi = Literal["auto", "mapInPandas", "rdd"]


def _master(spark) -> Optional[str]:
    try:
        return spark.sparkContext.master
    except Exception:  # Spark Connect: no SparkContext on the client; the server decides
        return None


def _version(spark) -> tuple[int, int, int]:
    """``spark.version`` as three integers ("3.5.1-amzn-0" -> (3, 5, 1)).

    >>> class S: version = "3.5.1-amzn-0"
    >>> _version(S())
    (3, 5, 1)
    """
    parts = [int(p) for p in re.findall(r"\d+", spark.version)[:3]]
    return tuple(parts + [0] * (3 - len(parts)))  # type: ignore[return-value]


def _conf(spark, key: str) -> Optional[str]:
    try:
        return spark.conf.get(key, None)
    except Exception:
        return None


def supports_task_profiles(spark) -> tuple[bool, str]:
    """(supported, why not) for task-only resource profiles on this session's cluster."""
    master = _master(spark)
    if master is None:
        return True, ""
    version = _version(spark)
    shown = ".".join(map(str, version))
    if master.startswith("local") and not master.startswith("local-cluster"):
        return False, "local mode has no stage-level scheduling"
    standalone = master.startswith(("spark://", "local-cluster"))
    if not (standalone or master.startswith(("yarn", "k8s://"))):
        return False, f"master {master!r} has no stage-level scheduling"
    if version < (3, 4, 0):
        return False, f"Spark {shown} has no task-only resource profiles (from 3.4)"
    dynamic = (_conf(spark, "spark.dynamicAllocation.enabled") or "false").lower() == "true"
    if not dynamic and not standalone and version < (3, 5, 1):
        return False, (f"Spark {shown} on {master.split(':')[0]} supports task-only profiles with dynamic "
                       "allocation off only from 3.5.1")
    return True, ""


def _fallback_note(spark, gpus_per_task: float, reason: str) -> None:
    amount = _conf(spark, "spark.task.resource.gpu.amount")
    log.warning("%s: not requesting %s GPU(s) per task with a stage-level profile; tasks get "
                "spark.task.resource.gpu.amount=%s from the cluster configuration instead",
                reason, gpus_per_task, amount if amount is not None else "unset (no GPUs)")


def gpu_profile(spark, gpus_per_task: float, cpus_per_task: Optional[int] = None):
    """A task-only ResourceProfile for ``gpus_per_task`` GPUs (and ``cpus_per_task`` cores),
    or None when no GPUs are asked for or the cluster cannot honor profiles (logged)."""
    if not gpus_per_task or gpus_per_task <= 0:
        return None
    ok, why = supports_task_profiles(spark)
    if not ok:
        _fallback_note(spark, gpus_per_task, why)
        return None
    from pyspark.resource import ResourceProfileBuilder, TaskResourceRequests

    requests = TaskResourceRequests().resource("gpu", float(gpus_per_task))
    if cpus_per_task:
        requests = requests.cpus(int(cpus_per_task))
    return ResourceProfileBuilder().require(requests).build


def map_in_pandas(df: DataFrame, fn: Callable, schema, gpus_per_task: float = 0,
                  cpus_per_task: Optional[int] = None, *, api: ProfileApi = "auto") -> DataFrame:
    """``df.mapInPandas(fn, schema)`` whose tasks each hold ``gpus_per_task`` GPUs.

    ``api`` picks how the profile is attached: ``"auto"`` by Spark version, or one path by
    name (``"rdd"`` also runs on Spark 4, which is how the 3.x path is tested).
    """
    spark = df.sparkSession
    profile = gpu_profile(spark, gpus_per_task, cpus_per_task)
    if profile is None:
        return df.mapInPandas(fn, schema)
    if api == "auto":
        api = "mapInPandas" if _version(spark) >= (4, 0, 0) else "rdd"
    log.info("requesting %s GPU(s)%s per task with a stage-level profile (%s)", gpus_per_task,
             f" and {cpus_per_task} core(s)" if cpus_per_task else "", api)
    if api == "mapInPandas":
        return df.mapInPandas(fn, schema, profile=profile)
    if api == "rdd":
        return with_resources_via_rdd(df.mapInPandas(fn, schema), profile)
    raise ValueError(f"api must be 'auto', 'mapInPandas' or 'rdd', got {api!r}")


def with_resources_via_rdd(mapped: DataFrame, profile) -> DataFrame:
    """Spark 3.x: attach ``profile`` to the stage computing ``mapped`` through its RDD.

    ``mapped.rdd`` runs the Python function in the same stage (no shuffle in between), so the
    stage gets the profile, and so does whatever follows up to the next shuffle (a write,
    typically); the Row round trip costs little next to generation.
    """
    return mapped.sparkSession.createDataFrame(mapped.rdd.withResources(profile), mapped.schema)
