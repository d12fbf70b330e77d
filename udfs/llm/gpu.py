"""The running Spark task's GPUs -> ``CUDA_VISIBLE_DEVICES`` and vLLM's tensor parallel size.

Spark hands each task the addresses of the GPUs it was scheduled with
(``TaskContext.resources()["gpu"].addresses``): from a stage-level ResourceProfile, or from
the cluster-wide ``spark.task.resource.gpu.amount``. A Python worker sees every GPU of its
executor, so two tasks on one executor would both land on GPU 0 unless each restricts
itself to its own addresses. CUDA reads ``CUDA_VISIBLE_DEVICES`` once, when it initializes:
``prepare_task_gpus`` must run before vLLM (or anything that touches CUDA) is imported.
"""
from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)


def task_gpu_addresses() -> list[str]:
    """GPU addresses assigned to the running task; [] outside a task or without GPUs."""
    try:
        from pyspark import TaskContext
    except ImportError:
        return []
    ctx = TaskContext.get()
    if ctx is None:
        return []
    info = (ctx.resources() or {}).get("gpu")
    return [str(a) for a in info.addresses] if info is not None else []


def prepare_task_gpus(model_cfg: dict) -> dict:
    """Pin this worker to the task's GPUs; returns the model config with
    ``tensor_parallel_size`` filled in (the task's GPU count) when it was unset.

    A no-op without GPU addresses (CPU runs, local mode without GPU resources).
    """
    addresses = task_gpu_addresses()
    cfg = dict(model_cfg)
    if not addresses:
        return cfg
    visible = ",".join(addresses)
    previous = os.environ.get("CUDA_VISIBLE_DEVICES")
    if previous not in (None, visible) and _devices_in_use():
        # A reused Python worker whose engine was built for an earlier task's GPUs: CUDA (and
        # vLLM's already started processes) read the variable once, so the engine stays there.
        # Harmless while the executor's Python workers hold disjoint GPU sets (one worker per
        # concurrent task, each keeping the set it started with), which is the usual case.
        log.warning("task GPUs %s differ from CUDA_VISIBLE_DEVICES=%s that this Python worker's engine "
                    "already runs on; the engine stays on %s", visible, previous, previous)
    os.environ["CUDA_VISIBLE_DEVICES"] = visible
    # vLLM starts one process per tensor-parallel rank; forking a process that may hold CUDA
    # state breaks them, so they must be spawned.
    os.environ["VLLM_WORKER_MULTIPROC_METHOD"] = "spawn"
    wanted = float(cfg.get("gpus_per_task") or 0)
    if wanted >= 1 and len(addresses) < wanted:
        # The stage-level profile was not applied (the driver logged why): the task holds what
        # spark.task.resource.gpu.amount gives, and a model sized for more GPUs may not fit.
        log.warning("the model asks for gpus_per_task=%g but this task holds %d GPU(s) (%s); "
                    "tensor parallelism follows the task's GPUs", wanted, len(addresses), visible)
    tp = cfg.get("tensor_parallel_size")
    if not tp:
        cfg["tensor_parallel_size"] = len(addresses)
    elif int(tp) > len(addresses):
        raise ValueError(f"tensor_parallel_size={tp} but the task was given {len(addresses)} GPU(s) "
                         f"({visible}); raise the model's gpus_per_task or lower tensor_parallel_size")
    return cfg


def _devices_in_use() -> bool:
    """Whether something in this process already read ``CUDA_VISIBLE_DEVICES``: vLLM imported
    (its engine processes inherit the variable when they start) or CUDA initialized by torch."""
    if "vllm" in sys.modules:
        return True
    torch = sys.modules.get("torch")
    try:
        return bool(torch is not None and torch.cuda.is_initialized())
    except Exception:
        return False
