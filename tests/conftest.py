"""One session-scoped local SparkSession for the whole test run (local[2], few shuffle partitions, UI off)."""
from __future__ import annotations

import os

import pytest

from jobs.common.config import PipelineConfig, SparkConfig, load_config
from jobs.common.spark import get_spark
from jobs.common.storage import TableStore

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.abspath(os.path.join(REPO, "..", "shared", "data"))


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU; skipped without one")
    config.addinivalue_line("markers", "slow: runs a real model or a whole pipeline")


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except Exception:
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="no GPU on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    s = get_spark(
        SparkConfig(master="local[2]", shuffle_partitions=2, driver_memory="2g"),
        checkpoint_dir=str(tmp_path_factory.mktemp("checkpoints")),
    )
    yield s
    s.stop()


@pytest.fixture()
def cfg(tmp_path) -> PipelineConfig:
    """Code defaults with storage under a fresh temporary root."""
    return load_config(None, [f"storage.root={tmp_path / 'root'}", "pipeline.progress=false"])


@pytest.fixture()
def store(spark, cfg) -> TableStore:
    return TableStore(spark, cfg.storage)
