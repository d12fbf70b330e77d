"""GPU scheduling without a GPU (ARCHITECTURE.md §12).

A standalone master and worker on 127.0.0.1 (``bin/spark-class`` from the pyspark wheel),
the worker announcing two fake GPUs through ``conf/gpu/fake_gpus.sh``. A separate driver in
a subprocess (this process already holds the local[2] test session, and a process has one
SparkContext) runs the real scheduling paths and reports, per task: the GPU addresses Spark
gave it, the ``CUDA_VISIBLE_DEVICES`` that ``prepare_task_gpus`` set, and the tensor parallel
size it derived. No CUDA is touched: the point is the addresses, which only a cluster manager
hands out.

The pure parts (address handling, local-mode fallback) run on the local session.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from jobs.common import gpu as driver_gpu
from tests.conftest import REPO
from udfs.llm import gpu

FAKE_GPUS = Path(REPO) / "conf" / "gpu" / "fake_gpus.sh"
DISCOVER_GPUS = Path(REPO) / "conf" / "gpu" / "discover_gpus.sh"


# --- address handling, no cluster -------------------------------------------------------

@pytest.fixture()
def clean_env(monkeypatch):
    for var in ("CUDA_VISIBLE_DEVICES", "VLLM_WORKER_MULTIPROC_METHOD"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_no_task_means_no_gpus_and_no_changes(clean_env):
    assert gpu.task_gpu_addresses() == []
    cfg = {"model": "m", "tensor_parallel_size": None}
    assert gpu.prepare_task_gpus(cfg) == cfg
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert "VLLM_WORKER_MULTIPROC_METHOD" not in os.environ


def test_task_addresses_become_visible_devices_and_tensor_parallel_size(clean_env):
    clean_env.setattr(gpu, "task_gpu_addresses", lambda: ["2", "3"])
    cfg = gpu.prepare_task_gpus({"model": "m", "tensor_parallel_size": None})
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert os.environ["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"
    assert cfg["tensor_parallel_size"] == 2


def test_fewer_task_gpus_than_the_model_asks_for_is_logged(clean_env, caplog):
    clean_env.setattr(gpu, "task_gpu_addresses", lambda: ["1"])
    with caplog.at_level(logging.WARNING, logger="udfs.llm.gpu"):
        cfg = gpu.prepare_task_gpus({"gpus_per_task": 4, "tensor_parallel_size": None})
    assert cfg["tensor_parallel_size"] == 1
    assert any("gpus_per_task=4 but this task holds 1 GPU" in r.getMessage() for r in caplog.records)


def test_configured_tensor_parallel_size_is_kept_or_refused(clean_env):
    clean_env.setattr(gpu, "task_gpu_addresses", lambda: ["0", "1"])
    assert gpu.prepare_task_gpus({"tensor_parallel_size": 1})["tensor_parallel_size"] == 1
    with pytest.raises(ValueError, match="tensor_parallel_size=4 but the task was given 2 GPU"):
        gpu.prepare_task_gpus({"tensor_parallel_size": 4})


def test_local_mode_tasks_have_no_gpu_addresses(spark):
    def probe(batches):
        from udfs.llm.gpu import task_gpu_addresses

        for pdf in batches:
            yield pd.DataFrame({"addresses": [",".join(task_gpu_addresses())] * len(pdf)})

    rows = spark.range(4).repartition(2).mapInPandas(probe, "addresses string").collect()
    assert {r.addresses for r in rows} == {""}


def test_local_mode_falls_back_to_cluster_gpu_amount_with_a_log_line(spark, caplog):
    df = spark.range(3)
    assert driver_gpu.gpu_profile(spark, 0) is None
    with caplog.at_level(logging.WARNING, logger="jobs.common.gpu"):
        assert driver_gpu.gpu_profile(spark, 1) is None
        out = driver_gpu.map_in_pandas(df, lambda it: it, df.schema, gpus_per_task=1)
    assert sorted(r.id for r in out.collect()) == [0, 1, 2]
    notes = [r.getMessage() for r in caplog.records if r.name == "jobs.common.gpu"]
    assert notes and all("local mode has no stage-level scheduling" in m for m in notes)
    assert "spark.task.resource.gpu.amount" in notes[0]


def test_profile_support_by_master_version_and_dynamic_allocation():
    class Conf:
        def __init__(self, values):
            self.values = values

        def get(self, key, default=None):
            return self.values.get(key, default)

    class Session:
        def __init__(self, master, version="4.1.0", dynamic=False):
            self.sparkContext = type("Ctx", (), {"master": master})()
            self.version = version
            self.conf = Conf({"spark.dynamicAllocation.enabled": str(dynamic).lower()})

    def ok(*args, **kw):
        return driver_gpu.supports_task_profiles(Session(*args, **kw))[0]

    assert ok("spark://10.0.0.1:7077") and ok("yarn") and ok("k8s://https://api:6443")
    assert ok("local-cluster[2,1,1024]")
    assert not ok("local[4]") and not ok("local") and not ok("mesos://h:5050")
    assert ok("spark://h:7077", version="3.4.1") and not ok("spark://h:7077", version="3.3.2")
    # YARN and Kubernetes take task-only profiles without dynamic allocation from 3.5.1 (EMR 7.x)
    assert not ok("yarn", version="3.5.0-amzn-0") and ok("yarn", version="3.5.1-amzn-1")
    assert ok("yarn", version="3.5.0-amzn-0", dynamic=True)
    why = driver_gpu.supports_task_profiles(Session("yarn", version="3.5.0"))[1]
    assert "3.5.1" in why and "yarn" in why


def test_unknown_profile_api_is_refused(monkeypatch, spark):
    monkeypatch.setattr(driver_gpu, "supports_task_profiles", lambda s: (True, ""))
    df = spark.range(2)
    with pytest.raises(ValueError, match="api must be"):
        driver_gpu.map_in_pandas(df, lambda it: it, df.schema, gpus_per_task=1, api="barrier")


def test_discovery_scripts_print_spark_resource_json(tmp_path):
    out = subprocess.run([str(FAKE_GPUS)], capture_output=True, text=True, check=True,
                         env={**os.environ, "NR_FAKE_GPUS": "3"})
    assert json.loads(out.stdout) == {"name": "gpu", "addresses": ["0", "1", "2"]}
    # The real script, with a stand-in nvidia-smi that reports four GPUs.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    smi = fake_bin / "nvidia-smi"
    smi.write_text("#!/bin/sh\nprintf '0\\n1\\n2\\n3\\n'\n")
    smi.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    out = subprocess.run([str(DISCOVER_GPUS)], capture_output=True, text=True, check=True, env=env)
    assert json.loads(out.stdout)["addresses"] == ["0", "1", "2", "3"]
    out = subprocess.run([str(DISCOVER_GPUS)], capture_output=True, text=True, check=True,
                         env={**env, "CUDA_VISIBLE_DEVICES": "1,3"})
    assert json.loads(out.stdout)["addresses"] == ["1", "3"]


# --- a real standalone cluster with fake GPUs -------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def _group_members(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    pids.append(int(entry))
            except (ProcessLookupError, PermissionError):
                pass
    return pids


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process this test started, then what it started itself and left behind (the
    worker's executor JVMs, in the session the test created for it), one id at a time."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    for pid in _group_members(proc.pid):  # start_new_session: the group id is proc.pid
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _master_state(ui_port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json", timeout=5) as r:
        return json.load(r)


@pytest.fixture(scope="module")
def standalone(spark_subprocess, tmp_path_factory):
    """(master URL, log folder) of a one-worker standalone cluster with 2 fake GPUs."""
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("standalone cluster needs Java")
    home = _spark_home()
    spark_class = home / "bin" / "spark-class"
    if not spark_class.exists():
        pytest.skip(f"no bin/spark-class in the pyspark package at {home}")
    work = tmp_path_factory.mktemp("standalone")
    props = work / "worker.properties"
    props.write_text(f"spark.worker.resource.gpu.amount 2\nspark.worker.resource.gpu.discoveryScript {FAKE_GPUS}\n")
    port, ui, worker_ui = _free_port(), _free_port(), _free_port()
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1", "NR_FAKE_GPUS": "2",
           "SPARK_NO_DAEMONIZE": "1"}
    started: list[subprocess.Popen] = []

    def launch(name: str, *args: str) -> subprocess.Popen:
        log = open(work / f"{name}.log", "w")
        p = subprocess.Popen([str(spark_class), *args], stdout=log, stderr=subprocess.STDOUT, env=env,
                             cwd=work, start_new_session=True)
        started.append(p)
        return p

    try:
        launch("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
               "--webui-port", str(ui))
        launch("worker", "org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{port}", "--host",
               "127.0.0.1", "--cores", "2", "--memory", "3g", "--webui-port", str(worker_ui), "--work-dir",
               str(work / "work"), "--properties-file", str(props))
        deadline = time.time() + 90
        state: dict = {}
        while time.time() < deadline:
            if any(p.poll() is not None for p in started):
                break
            try:
                state = _master_state(ui)
                if state.get("aliveworkers", 0) >= 1:
                    break
            except OSError:
                pass
            time.sleep(1)
        if not state.get("aliveworkers"):
            logs = "\n".join(f"--- {f.name}\n{f.read_text()[-1500:]}" for f in sorted(work.glob("*.log")))
            pytest.skip(f"standalone cluster did not start within 90 s:\n{logs}")
        yield f"spark://127.0.0.1:{port}", work
    finally:
        for p in reversed(started):
            _stop(p)


DRIVER = textwrap.dedent("""
    import json, os, sys
    import pandas as pd
    from pyspark.sql import SparkSession

    master, repo, out_path = sys.argv[1:4]
    sys.path.insert(0, repo)
    from jobs.common.gpu import map_in_pandas

    spark = (SparkSession.builder.master(master).appName("nr-gpu-scheduling-test")
             .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
             .config("spark.ui.enabled", "false").config("spark.dynamicAllocation.enabled", "false")
             .config("spark.cores.max", "2").config("spark.executor.cores", "2")
             .config("spark.executor.memory", "1g")
             .config("spark.executor.resource.gpu.amount", "2")
             .config("spark.task.resource.gpu.amount", "1")
             .config("spark.executorEnv.PYTHONPATH", repo)
             .config("spark.sql.shuffle.partitions", "4")
             .getOrCreate())
    SCHEMA = "part int, addresses string, cuda string, method string, tp int"

    def probe(batches):
        from pyspark import TaskContext
        from udfs.llm.gpu import prepare_task_gpus, task_gpu_addresses

        for _ in batches:
            addresses = task_gpu_addresses()
            cfg = prepare_task_gpus({"model": "m", "tensor_parallel_size": None})
            yield pd.DataFrame({
                "part": [TaskContext.get().partitionId()], "addresses": [",".join(addresses)],
                "cuda": [os.environ.get("CUDA_VISIBLE_DEVICES")],
                "method": [os.environ.get("VLLM_WORKER_MULTIPROC_METHOD")],
                "tp": [cfg.get("tensor_parallel_size")]})

    df = spark.range(0, 4, numPartitions=4)
    results = {
        # no GPUs asked for: the cluster level spark.task.resource.gpu.amount=1
        "cluster": map_in_pandas(df, probe, SCHEMA, gpus_per_task=0),
        # what Spark >= 4.0 picks by itself: mapInPandas(..., profile=)
        "profile": map_in_pandas(df, probe, SCHEMA, gpus_per_task=2, cpus_per_task=2),
        # the Spark 3.x path (rdd.withResources), forced here since it exists in Spark 4 too
        "rdd": map_in_pandas(df, probe, SCHEMA, gpus_per_task=2, cpus_per_task=2, api="rdd"),
    }
    report = {name: [r.asDict() for r in frame.collect()] for name, frame in results.items()}
    json.dump(report, open(out_path, "w"))
    spark.stop()
""")


@pytest.fixture(scope="module")
def scheduled(standalone):
    master, work = standalone
    script = work / "driver.py"
    script.write_text(DRIVER)
    out = work / "report.json"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "SPARK_LOCAL_IP": "127.0.0.1"}
    env.pop("PYSPARK_GATEWAY_PORT", None)
    res = subprocess.run([sys.executable, str(script), master, REPO, str(out)], capture_output=True, text=True,
                         env=env, timeout=300, cwd=work)
    assert res.returncode == 0, res.stderr[-4000:]
    return json.loads(out.read_text())


def test_cluster_level_amount_gives_each_task_one_gpu(scheduled):
    rows = scheduled["cluster"]
    assert sorted(r["part"] for r in rows) == [0, 1, 2, 3]
    for r in rows:
        assert r["addresses"] in ("0", "1"), r
        assert r["cuda"] == r["addresses"]
        assert r["method"] == "spawn"
        assert r["tp"] == 1


def test_stage_profile_gives_each_task_both_gpus(scheduled):
    rows = scheduled["profile"]
    assert sorted(r["part"] for r in rows) == [0, 1, 2, 3]
    assert all(r["addresses"] == "0,1" and r["cuda"] == "0,1" and r["tp"] == 2 for r in rows), rows


def test_spark3_rdd_with_resources_path_gives_each_task_both_gpus(scheduled):
    rows = scheduled["rdd"]
    assert sorted(r["part"] for r in rows) == [0, 1, 2, 3]
    assert all(r["addresses"] == "0,1" and r["cuda"] == "0,1" and r["tp"] == 2 for r in rows), rows
