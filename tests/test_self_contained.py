"""The repository alone runs the pipeline: a copy of the tracked files, with no ../shared beside
it and no NR_BENCHMARKS_DIR, runs the whole pipeline (scripted model) and ``nr decontaminate``
against the shipped benchmark index."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from deltalake import DeltaTable

from tests.conftest import REPO

BUILTIN_ITEMS = {"math": 5000, "gpqa": 198, "mmlu_pro": 12030, "mmlu_stem": 3153}


def tracked_copy(dest) -> str:
    try:
        # What a commit of this tree would hold: tracked files plus new, not ignored ones.
        files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                               cwd=REPO, check=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.fail(f"git ls-files failed in {REPO}: {e}")
    proj = os.path.join(str(dest), "proj")
    for rel in filter(None, files.decode().split("\0")):
        if not os.path.exists(os.path.join(REPO, rel)):  # deleted in the working tree, not yet committed
            continue
        os.makedirs(os.path.dirname(os.path.join(proj, rel)), exist_ok=True)
        shutil.copy2(os.path.join(REPO, rel), os.path.join(proj, rel))
    return proj


def run(proj, *args, timeout=900):
    env = {k: v for k, v in os.environ.items() if k not in ("NR_BENCHMARKS_DIR", "PYTHONPATH")}
    env["PYTHONPATH"] = proj  # the copy's packages, not the editable install's
    return subprocess.run([sys.executable, *args], cwd=proj, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_tracked_files_alone_run_the_pipeline_and_decontaminate(spark_subprocess, tmp_path):
    proj = tracked_copy(tmp_path)
    assert not os.path.exists(os.path.join(str(tmp_path), "shared"))
    where = run(proj, "-c", "import jobs, udfs; print(jobs.__file__); print(udfs.__file__)")
    assert where.returncode == 0 and all(p.startswith(proj) for p in where.stdout.split()), where

    root = str(tmp_path / "root")
    got = run(proj, "-m", "jobs.cli", "run", "--config", "conf/local.yaml",
              "--set", f"storage.root={root}", "--set", "pipeline.progress=false",
              "--set", "llm.models.default.engine=scripted",
              "--set", "llm.models.default.engine_kwargs={script: 'udfs.llm.scripted_pipeline:respond'}")
    assert got.returncode == 0, got.stdout[-3000:] + got.stderr[-6000:]
    dataset = DeltaTable(os.path.join(root, "dataset")).to_pyarrow_table()
    runs = DeltaTable(os.path.join(root, "runs")).to_pyarrow_table().to_pylist()
    last = {r["stage"]: r for r in runs}
    assert {s: r["status"] for s, r in last.items()}.keys() >= {"ingest", "annotate", "synthesize", "decontaminate",
                                                                "respond", "judge", "dataset"}
    assert all(r["status"] in ("ok", "skipped") for r in last.values()), {s: r["error"] for s, r in last.items()}
    assert dataset.num_rows > 0 and dataset.num_rows == dict(last["dataset"]["counts"])["out"]
    dc = dict(last["decontaminate"]["counts"])
    assert dc["checked_benchmarks"] == 4
    assert {b: dc[f"contaminated_{b}"] for b in BUILTIN_ITEMS} == dict.fromkeys(BUILTIN_ITEMS, 0)
    assert all(dc[f"benchmark_ngrams_{b}"] > 10000 for b in BUILTIN_ITEMS)

    # The standalone tool on a small table, default settings: the shipped index again.
    src = tmp_path / "items.jsonl"
    src.write_text("".join(json.dumps({"id": i, "q": q}) + "\n" for i, q in enumerate([
        "How many ways can eight rooks be placed on a chessboard so that none attacks another?",
        "A short question",
        "",
    ])))
    out = run(proj, "-m", "jobs.cli", "decontaminate", "--input", str(src), "--input-format", "jsonl",
              "--id-col", "id", "--text-col", "q", "--output", str(tmp_path / "dc"))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    for b, n in BUILTIN_ITEMS.items():
        assert re.search(rf"{b}: {n} benchmark items, \d+ n-grams; contaminated=0 ", out.stdout), out.stdout
    assert "items=3 contaminated=0" in out.stdout
