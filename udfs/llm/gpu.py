"""GPU addresses of the running Spark task -> CUDA_VISIBLE_DEVICES and tensor parallel size.

Must run before vLLM (or torch.cuda) is imported in the worker: CUDA reads the variable once.
"""
from __future__ import annotations

import os


def task_gpu_addresses() -> list[str]:
    try:
        from pyspark import TaskContext
    except ImportError:
        return []
    ctx = TaskContext.get()
    if ctx is None:
        return []
    res = ctx.resources().get("gpu")
    return list(res.addresses) if res is not None else []


def prepare_task_gpus(model_cfg: dict) -> dict:
    addresses = task_gpu_addresses()
    cfg = dict(model_cfg)
    if not addresses:
        return cfg
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(addresses)
    # vLLM's workers must not fork a process that already touched CUDA.
    os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
    if not cfg.get("tensor_parallel_size"):
        cfg["tensor_parallel_size"] = len(addresses)
    return cfg
